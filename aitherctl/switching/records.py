"""The records a switch keeps on the engine (small labelled volumes): its intent while it runs,
its commit mark, and which profile the committed set belongs to. Read on every `ps` and `run`, so
this module imports nothing heavy."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from aitherctl.docker.stack import ManagedContainer
from aitherctl.engines import container as c

if TYPE_CHECKING:
    from aitherctl.docker.engine import DockerEngine

LABEL_KIND = c.LABEL_PREFIX + "record-kind"  # "txn", "commit" or "active"
LABEL_INTENT = c.LABEL_PREFIX + "intent"
LABEL_ACTIVE_PROFILE = c.LABEL_PREFIX + "active-profile"
LABEL_ACTIVE_HASHES = c.LABEL_PREFIX + "active-hashes"  # {"service": "spec hash", ...}


def record_name(namespace: str, txn: str, kind: str) -> str:
    base = "aither" if namespace == "default" else f"aither-{namespace}"
    return f"{base}-txn-{txn}" + ("-commit" if kind == "commit" else "")


def active_record_name(namespace: str) -> str:
    return ("aither" if namespace == "default" else f"aither-{namespace}") + "-active"


def running_hashes(containers: Sequence[ManagedContainer]) -> dict[str, str]:
    return {item.service: item.spec_hash for item in containers if item.running and not item.aside}


def write_active(
    engine: DockerEngine, profile: str, containers: Sequence[ManagedContainer]
) -> None:
    """Remember which profile the committed set belongs to, with the spec hashes of what runs,
    so `ps` and `run` name the active profile without parsing every profile. It is trusted only
    while what runs still has exactly those hashes (`active_from_records`)."""
    name = active_record_name(engine.namespace)
    engine.remove_record(name)
    hashes = running_hashes(containers)
    if profile == "-":
        return
    # With nothing left running (`down --all`) the record still names the profile, with no
    # hashes: `up` brings that profile back (`last_from_records`).
    engine.write_record(
        name,
        {
            LABEL_KIND: "active",
            LABEL_ACTIVE_PROFILE: profile,
            LABEL_ACTIVE_HASHES: json.dumps(hashes, sort_keys=True, separators=(",", ":")),
        },
    )


def active_from_records(
    records: dict[str, dict[str, str]], containers: Sequence[ManagedContainer]
) -> str | None:
    """The active profile the last commit recorded, if what runs is still exactly that set."""
    for labels in records.values():
        if labels.get(LABEL_KIND) != "active":
            continue
        try:
            hashes = json.loads(labels.get(LABEL_ACTIVE_HASHES, ""))
        except ValueError:
            return None
        if hashes == running_hashes(containers):
            return labels.get(LABEL_ACTIVE_PROFILE) or None
    return None


def last_from_records(records: dict[str, dict[str, str]]) -> str | None:
    """The profile the last commit recorded, whatever runs now (for `up` after `down --all`)."""
    for labels in records.values():
        if labels.get(LABEL_KIND) == "active":
            return labels.get(LABEL_ACTIVE_PROFILE) or None
    return None


def is_switch_record(labels: dict[str, str]) -> bool:
    return labels.get(LABEL_KIND) in ("txn", "commit")
