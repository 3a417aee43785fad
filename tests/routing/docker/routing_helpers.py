"""Helpers for the routing tests: a profile file written on the fly, a Router with real adapters."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aitherctl.profiles.catalog import ProfileCatalog
from aitherctl.profiles.profile import Profile
from aitherctl.routing.router import Router, StackView, open_router


def write_profile(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def load_profile(folder: Path, name: str, text: str) -> Profile:
    path = write_profile(folder, name, text)
    return ProfileCatalog(builtin_dir=folder, user_dir=folder).load_file(path)


@contextmanager
def router_for(
    folder: Path, name: str, text: str, stack: StackView | None = None
) -> Iterator[Router]:
    with open_router(load_profile(folder, name, text), stack) as router:
        yield router


class FixedStack:
    """A StackView with a fixed set of running services."""

    def __init__(self, running: set[str]) -> None:
        self.running = frozenset(running)

    def running_services(self, profile: str) -> frozenset[str] | None:  # noqa: ARG002
        return self.running
