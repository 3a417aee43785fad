"""The monitor's view of the Docker engine: managed containers, their health, recent events.

One refresh costs one `GET /containers/json` (filtered by aitherctl's labels), one inspect per
managed container (`docker inspect`: state, health, init PID, start time) and one bounded
`GET /events` since the previous refresh (`docker events --since --until`): container starts,
deaths, restarts and health changes become log lines. With no engine the reading carries the
reason, and a new connection is tried at most every `retry_s` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aitherctl.docker.stack import ManagedContainer, infer_active_profile
from aitherctl.engines import container as c
from aitherctl.errors import AitherError
from aitherctl.monitor.model import LogEntry, LogKind, StackReading

_EVENT_WORDS = {
    "start": (LogKind.RESTART, "started"),
    "die": (LogKind.RESTART, "exited"),
    "oom": (LogKind.RESTART, "killed: out of memory"),
    "restart": (LogKind.RESTART, "restarted"),
    "destroy": (LogKind.SWITCH, "removed"),
    "create": (LogKind.SWITCH, "created"),
}


class DockerStackSource:
    """Reads aitherctl's containers in one namespace. `connect` returns a `DockerEngine`."""

    def __init__(
        self,
        connect: Callable[[], Any] | None = None,
        *,
        retry_s: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if connect is None:
            from aitherctl.docker.engine import DockerEngine

            connect = DockerEngine.connect
        self._connect = connect
        self._engine: Any | None = None
        self._version: str | None = None
        self._error: str | None = None
        self._retry_s = retry_s
        self._monotonic = monotonic
        self._next_try = 0.0
        self._events_since: float | None = None
        self._inspected: dict[
            str, tuple[tuple[str, str], ManagedContainer, str | None, int | None]
        ] = {}

    @property
    def engine(self) -> Any | None:
        """The connected `DockerEngine`, for actions (restart, stop, logs); None when down."""
        return self._engine

    def _ensure(self) -> Any | None:
        if self._engine is not None:
            return self._engine
        if self._monotonic() < self._next_try:
            return None
        self._next_try = self._monotonic() + self._retry_s
        try:
            engine = self._connect()
            version = engine.version()
        except AitherError as exc:
            self._error = exc.message
            return None
        self._engine, self._error = engine, None
        self._version = f"Docker {version.get('Version', '?')}"
        self._events_since = round(time.time(), 3)
        return engine

    def read(self) -> StackReading:
        engine = self._ensure()
        if engine is None:
            return StackReading(error=self._error or "Docker engine unavailable")
        try:
            return self._read(engine)
        except AitherError as exc:
            self._engine, self._error = None, exc.message
            return StackReading(error=exc.message)

    def _read(self, engine: Any) -> StackReading:
        filters = {"label": [f"{c.LABEL_MANAGED}=true", f"{c.LABEL_NAMESPACE}={engine.namespace}"]}
        api = engine.client.api
        events, touched = self._events(engine, filters)
        listed = engine.call(
            "listing containers", lambda: api.containers(all=True, filters=filters)
        )
        containers: list[ManagedContainer] = []
        health: dict[str, str] = {}
        init_pids: dict[str, int | None] = {}
        seen: dict[str, tuple[tuple[str, str], ManagedContainer, str | None, int | None]] = {}
        for item in listed:
            # The list already says state and health ("Up 2 hours (healthy)"); a container is
            # inspected again only when those change or an event named it (a restart).
            signature = (str(item.get("State")), _health_word(str(item.get("Status", ""))))
            cached = self._inspected.get(item["Id"])
            if cached is None or cached[0] != signature or item["Id"] in touched:
                cached = (signature, *self._inspect(engine, item["Id"]))
            seen[item["Id"]] = cached
            _, managed, status, pid = cached
            containers.append(managed)
            if status:
                health[managed.id] = status
            init_pids[managed.id] = pid
        self._inspected = seen
        return StackReading(
            containers=tuple(containers),
            active_profile=infer_active_profile(containers),
            engine=self._version,
            health=health,
            init_pids=init_pids,
            events=events,
        )

    @staticmethod
    def _inspect(engine: Any, container_id: str) -> tuple[ManagedContainer, str | None, int | None]:
        attrs = engine.call(
            "inspecting a container", lambda: engine.client.api.inspect_container(container_id)
        )
        state = attrs.get("State") or {}
        status = state.get("Status", "unknown")
        managed = ManagedContainer.from_labels(
            id=attrs["Id"],
            name=str(attrs.get("Name", "")).lstrip("/"),
            state=status,
            image=(attrs.get("Config") or {}).get("Image", ""),
            labels=(attrs.get("Config") or {}).get("Labels") or {},
            created_at=attrs.get("Created"),
            started_at=state.get("StartedAt") if status == "running" else None,
            exit_code=state.get("ExitCode") if status in ("exited", "dead") else None,
        )
        return managed, (state.get("Health") or {}).get("Status"), state.get("Pid") or None

    def _events(
        self, engine: Any, filters: dict[str, list[str]]
    ) -> tuple[tuple[LogEntry, ...], set[str]]:
        """Log lines for what happened since the last call, and the container ids involved."""
        until = round(time.time(), 3)
        since = self._events_since if self._events_since is not None else until
        if until <= since:
            return (), set()
        self._events_since = until
        event_filters = {**filters, "type": ["container"]}
        try:
            stream = engine.client.api.events(
                since=since, until=until, filters=event_filters, decode=True
            )
            raw = list(stream)
        except Exception:  # events are a nicety; the table still shows the state
            return (), set()
        entries = []
        touched: set[str] = set()
        for event in raw:
            touched.add(str((event.get("Actor") or {}).get("ID") or event.get("id") or ""))
            action = str(event.get("Action") or event.get("status") or "")
            attributes = (event.get("Actor") or {}).get("Attributes") or {}
            service = attributes.get(c.LABEL_SERVICE, attributes.get("name", "?"))
            at = datetime.fromtimestamp(event.get("time", until), UTC)
            if action.startswith("health_status"):
                status = action.rpartition(": ")[2]
                entries.append(LogEntry(at, LogKind.PROBE, f"{service}: {status}"))
            elif action in _EVENT_WORDS:
                kind, word = _EVENT_WORDS[action]
                profile = attributes.get(c.LABEL_PROFILE)
                suffix = f" (profile {profile})" if kind is LogKind.SWITCH and profile else ""
                entries.append(LogEntry(at, kind, f"{service}: {word}{suffix}"))
        return tuple(entries), touched


def _health_word(status: str) -> str:
    """`Up 2 hours (healthy)` → `healthy`; `Up 3 seconds (health: starting)` → `starting`."""
    if "(" not in status:
        return ""
    return status.rsplit("(", 1)[1].rstrip(")").removeprefix("health: ")
