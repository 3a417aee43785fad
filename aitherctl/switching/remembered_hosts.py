"""Which other Docker hosts the last multi-host switch left services on (`hosts.json` in the
state folder): `ps`, the monitor and the next switch look there too. Light: no Docker SDK, so
`ps --json` stays fast when the file is absent or small."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping

from aitherctl.profiles.profile import Host

HOSTS_FILE = "hosts.json"


def remembered_hosts() -> dict[str, Host]:
    """The other hosts the last multi-host switch left services on (none when unreadable)."""
    from aitherctl.paths import state_dir

    try:
        data = json.loads((state_dir() / HOSTS_FILE).read_text())
        return {
            name: Host(name, str(item["docker"]), str(item["address"]))
            for name, item in (data.get("hosts") or {}).items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def remembered_profile() -> str | None:
    from aitherctl.paths import state_dir

    try:
        return str(json.loads((state_dir() / HOSTS_FILE).read_text())["profile"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remember_hosts(profile: str, hosts: Mapping[str, Host]) -> None:
    from aitherctl.paths import state_dir

    folder = state_dir()
    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / HOSTS_FILE
        if not hosts:
            path.unlink(missing_ok=True)
            return
        body = {
            "profile": profile,
            "hosts": {h.name: {"docker": h.docker, "address": h.address} for h in hosts.values()},
        }
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(body, indent=1) + "\n")
        temporary.replace(path)
