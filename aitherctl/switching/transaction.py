"""Applying a plan as a transaction: all of it happens, or the previous set is back.

The sequence (one for every caller: `profile switch`, `up`, `down`, the monitor's actions):
1. Record the intent on the engine before anything changes: a labelled volume
   `aither[-NS]-txn-ID` lists every container that will be set aside (its id, its name, whether it
   was running) and every stopped container that will be resumed. Every container the switch
   creates carries the label `ai.aitherctl.txn=ID`.
2. Set aside: each container the plan replaces or removes is renamed `NAME-aside-ID` and stopped
   (never removed), so a rollback can start the very same container again.
3. Start: new containers are created and started, stopped ones resumed; services on one GPU one
   after another (each allocates memory when it starts), the rest in parallel; each waited for
   until its readiness probe answers. The waits watch a cancel flag, so a failure elsewhere or a
   signal ends them within about a second.
4. Commit: a second record (`...-commit`) marks the point of no return, then the set-aside
   containers are removed, restart policies set, and both records removed.
Any failure before the commit (a service that never answers, a Docker API error while stopping,
renaming, creating, starting or inspecting, SIGINT, SIGTERM or SIGHUP) rolls back: everything the
switch created is removed and every set-aside container is renamed back and started, each one on
its own, so one that cannot be restored does not leave the others stopped.
A process killed outright (`kill -9`, a power cut) leaves the records behind; `recover` (run by
the next `switch`, `up`, `down` and by `aitherctl recover`) reads them and rolls back, or, when
the commit record exists, finishes the commit. Set-aside containers are only ever touched here.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

from aitherctl.docker.stack import ManagedContainer
from aitherctl.engines import container as c
from aitherctl.engines.container import ContainerSpec, HttpCheck
from aitherctl.engines.registry import allocates_gpu_at_start
from aitherctl.errors import AitherError, DockerUnavailableError, SwitchFailedError
from aitherctl.profiles.profile import LOCAL_HOST
from aitherctl.switching import journal
from aitherctl.switching.plan import Action, Plan
from aitherctl.switching.readiness import ReadinessProbe, netloc, probe_host
from aitherctl.switching.records import (
    LABEL_INTENT,
    LABEL_KIND,
    is_switch_record,
    record_name,
    write_active,
)
from aitherctl.switching.specs import restart_policy
from aitherctl.threads import in_threads

if TYPE_CHECKING:
    from aitherctl.docker.engine import DockerEngine

LOG_TAIL_LINES = 15
RESTORE_TIMEOUT_S = 300.0
POLL_S = 0.1  # a readiness probe is a millisecond; a ready server is seen within 0.1 s
PROBE_TIMEOUT_S = 1.0  # a readiness probe never delays a cancel by more than this
DEFAULT_READY_TIMEOUT_S = 300.0


class Progress(Protocol):
    """Receives progress; the CLI renders it, tests record it. Called from worker threads."""

    def note(self, message: str) -> None: ...

    def service(self, service: str, status: str, detail: str = "") -> None: ...


class Interrupted(KeyboardInterrupt):
    """A signal (SIGINT, SIGTERM, SIGHUP) stopped a switch; the previous set was restored."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.summary = ""

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


@dataclass(frozen=True, slots=True)
class ServiceOutcome:
    """How one service's start went: ready or not within `seconds`, why, the end of its log when
    it failed, and the host it ran on."""

    service: str
    ready: bool
    seconds: float
    detail: str
    log_tail: str = ""
    host: str = LOCAL_HOST  # the profile's name for the engine it ran on


@dataclass(frozen=True, slots=True)
class Rollback:
    """What a rollback on one engine did; `engine_lost`: the engine stopped answering, so its
    records stay there for `recover` to finish once it answers again."""

    summary: str
    engine_lost: bool = False


@dataclass(frozen=True, slots=True)
class AsideEntry:
    """A container a switch sets aside: its id, its service, its name before, and whether it ran."""

    id: str
    service: str
    name: str  # its name before it was set aside
    was_running: bool

    def aside_name(self, txn: str) -> str:
        return f"{self.name}{c.ASIDE_MARK}{txn}"


@dataclass(frozen=True, slots=True)
class Intent:
    """A switch's record on the engine, written before anything changes: the containers it sets
    aside, resumes and restarts, so `recover` can finish or undo it."""

    txn: str
    profile: str
    aside: tuple[AsideEntry, ...]
    resumed: tuple[str, ...]  # ids of stopped containers the switch starts again
    restarted: tuple[str, ...]  # ids of running containers the switch restarts

    def to_json(self) -> str:
        return json.dumps(
            {
                "txn": self.txn,
                "profile": self.profile,
                "aside": [
                    {"id": e.id, "service": e.service, "name": e.name, "was_running": e.was_running}
                    for e in self.aside
                ],
                "resumed": list(self.resumed),
                "restarted": list(self.restarted),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Intent:
        data = json.loads(text)
        return cls(
            txn=str(data["txn"]),
            profile=str(data.get("profile", "?")),
            aside=tuple(
                AsideEntry(str(e["id"]), str(e["service"]), str(e["name"]), bool(e["was_running"]))
                for e in data.get("aside", [])
            ),
            resumed=tuple(str(i) for i in data.get("resumed", [])),
            restarted=tuple(str(i) for i in data.get("restarted", [])),
        )


# ---- signals ----------------------------------------------------------------------------------

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class SignalCancel(threading.Event):
    """A cancel event that SIGINT, SIGTERM and SIGHUP set, for a switch that runs in a worker
    thread (the monitor's): `install` (from the main thread) puts the handlers in place,
    `restore` puts the previous ones back. The transaction then rolls back as it does on a
    signal in the main thread (`Interrupted`); `signum` says which signal came."""

    def __init__(self) -> None:
        super().__init__()
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del frame
        if self.signum is None:
            self.signum = signum
        self.set()

    def install(self) -> None:
        for sig in HANDLED_SIGNALS:
            with contextlib.suppress(ValueError, OSError):
                self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            with contextlib.suppress(ValueError, OSError):
                signal.signal(sig, handler)
        self._previous.clear()


def _signalled(cancel: threading.Event) -> int | None:
    return cancel.signum if isinstance(cancel, SignalCancel) else None


class SignalGuard:
    """While a switch runs in the main thread, SIGINT, SIGTERM and SIGHUP cancel it: the first
    one sets the cancel flag (readiness waits end within a second) and raises `Interrupted`.
    Once the rollback has begun (`hold`), signals no longer interrupt; one received then only
    stops the wait for restored services to answer (they are started and come up on their own)."""

    def __init__(self, cancel: threading.Event, progress: Progress) -> None:
        self.cancel = cancel
        self.progress = progress
        self.holding = False
        self.during_rollback = 0
        self._previous: dict[int, Any] = {}
        self._active = threading.current_thread() is threading.main_thread()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del frame
        self.cancel.set()
        if not self.holding:
            self.holding = True
            raise Interrupted(signum)
        self.during_rollback += 1
        _quietly(self.progress.note, "rolling back; not waiting for restored services to answer")

    def __enter__(self) -> SignalGuard:
        if self._active:
            for sig in HANDLED_SIGNALS:
                with contextlib.suppress(ValueError, OSError):
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def hold(self) -> None:
        """From now on (the rollback), signals are noted, not raised."""
        self.holding = True

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            with contextlib.suppress(ValueError, OSError):
                signal.signal(sig, handler)


def _quietly(call: Callable[..., None], *args: str) -> None:
    """Progress output must never break a rollback (a closed SSH session makes writes fail)."""
    with contextlib.suppress(Exception):
        call(*args)


class SafeProgress:
    def __init__(self, inner: Progress) -> None:
        self.inner = inner

    def note(self, message: str) -> None:
        _quietly(self.inner.note, message)

    def service(self, service: str, status: str, detail: str = "") -> None:
        _quietly(self.inner.service, service, status, detail)


# ---- what a start is ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartItem:
    """One service to bring up: a new container (`spec`), or an existing one (`existing`)."""

    service: str
    gpus: tuple[int, ...]
    checks: tuple[HttpCheck, ...]
    port: int | None
    bind: str
    timeout_s: float
    spec: ContainerSpec | None = None
    existing: ManagedContainer | None = None
    # Takes GPU memory as it starts, sized by what is free then: such services share a lane.
    serialise: bool = True
    engine: str = ""
    model: str | None = None


class ModelStep(Protocol):
    """Run once a service answers its readiness probe, before it counts as ready: make sure
    the server has its model (an Ollama server pulls it through its own API). The readiness
    timeout does not cover it: a download takes as long as it takes, and `cancelled()` ends it.
    `host` is the profile's name for the engine's host; `base_url` where the service answers.
    `report(status, detail)` shows where it is; the result is None, or why it is not ready."""

    def __call__(
        self,
        item: StartItem,
        host: str,
        base_url: str,
        report: Callable[[str, str], None],
        cancelled: Callable[[], bool],
    ) -> str | None: ...


def start_items(plan: Plan) -> list[StartItem]:
    items = []
    for step in plan.steps:
        target = step.target
        timeout = target.readiness.timeout_s if target else DEFAULT_READY_TIMEOUT_S
        if step.action in (Action.START, Action.RECREATE) and target is not None:
            items.append(
                StartItem(
                    step.service,
                    target.gpus,
                    target.readiness.checks,
                    target.host_port,
                    target.bind,
                    timeout,
                    spec=target,
                    serialise=allocates_gpu_at_start(target),
                    engine=target.engine.value,
                    model=target.model,
                )
            )
        elif step.action in (Action.RESUME, Action.RESTART) and step.current is not None:
            item = step.current
            items.append(
                StartItem(
                    step.service,
                    item.gpus,
                    target.readiness.checks if target else item.health_checks,
                    item.port,
                    item.bind,
                    timeout,
                    existing=item,
                    serialise=allocates_gpu_at_start(target) if target else bool(item.gpus),
                    engine=item.engine,
                    model=target.model if target else item.model,
                )
            )
    return items


def lanes(items: Sequence[StartItem]) -> list[list[StartItem]]:
    """Services that share a GPU start one after another: every engine that allocates GPU memory
    at start measures what is free then (vLLM's --gpu-memory-utilization check, llama.cpp's
    offload, ComfyUI's model load), so two starting at once can both see memory the other is
    about to take. CPU services, and GPU services whose engine takes memory only when a request
    comes (Ollama), start in parallel."""
    gpu_lanes: list[tuple[set[int], list[StartItem]]] = []
    cpu_lanes: list[list[StartItem]] = []
    for item in items:
        if not item.gpus or not item.serialise:
            cpu_lanes.append([item])
            continue
        joined = [lane for lane in gpu_lanes if lane[0] & set(item.gpus)]
        if not joined:
            gpu_lanes.append((set(item.gpus), [item]))
            continue
        gpus, lane = joined[0]
        for other_gpus, other in joined[1:]:  # a multi-GPU service joins two lanes into one
            gpus.update(other_gpus)
            lane.extend(other)
            gpu_lanes.remove((other_gpus, other))
        gpus.update(item.gpus)
        lane.append(item)
    return [lane for _, lane in gpu_lanes] + cpu_lanes


# ---- the transaction ---------------------------------------------------------------------------


class EnginePart:
    """One engine's share of a switch: its intent record, set-aside, starts and waits, commit
    record and rollback. `Transaction` runs one or several of them as one switch."""

    def __init__(
        self,
        engine: DockerEngine,
        plan: Plan,
        progress: Progress,
        cancel: threading.Event | None = None,
        *,
        host: str = LOCAL_HOST,
        model_step: ModelStep | None = None,
    ) -> None:
        """`cancel`: set from another thread (a failure on another host, the scheduler shutting
        down) to end the readiness waits; the transaction then rolls back. `model_step`: run
        after each service's readiness probe answers (`ModelStep`)."""
        self.engine = engine
        self.model_step = model_step
        self.plan = plan
        self.host = host
        self.progress = SafeProgress(progress)
        self.txn = os.urandom(5).hex()  # 10 hex digits, as uuid4 gave (uuid imports platform)
        self.cancel = cancel if cancel is not None else threading.Event()
        self.created: list[str] = []
        self._lock = threading.Lock()
        aside = [
            AsideEntry(step.current.id, step.service, step.current.name, step.current.running)
            for step in plan.of(Action.STOP, Action.RECREATE)
            if step.current is not None
        ]
        self.intent = Intent(
            self.txn,
            plan.profile,
            tuple(aside),
            tuple(s.current.id for s in plan.of(Action.RESUME) if s.current),
            tuple(s.current.id for s in plan.of(Action.RESTART) if s.current),
        )

    def begin(self) -> list[ServiceOutcome]:
        """Everything before the commit: record the intent, set aside, start and wait. Raises
        a Docker error as it comes; the caller rolls back (`rollback`)."""
        self.engine.write_record(
            record_name(self.engine.namespace, self.txn, "txn"),
            {LABEL_KIND: "txn", c.LABEL_TXN: self.txn, LABEL_INTENT: self.intent.to_json()},
        )
        self._set_aside()
        return self._start_all()

    def write_commit(self) -> None:
        """The point of no return on this engine: `recover` finishes from here on."""
        self.engine.write_record(
            record_name(self.engine.namespace, self.txn, "commit"),
            {LABEL_KIND: "commit", c.LABEL_TXN: self.txn},
        )

    def _set_aside(self) -> None:
        """Rename aside, then stop, every container the plan removes or replaces; stop those it
        restarts. In parallel; the first Docker error is raised once all have finished."""
        jobs: list[Callable[[], None]] = []
        for entry in self.intent.aside:

            def set_aside(entry: AsideEntry = entry) -> None:
                self.progress.service(entry.service, "stopping")
                self.engine.rename(entry.id, entry.aside_name(self.txn))
                if entry.was_running:
                    self.engine.stop(entry.id)
                self.progress.service(entry.service, "stopped")

            jobs.append(set_aside)
        for step in self.plan.of(Action.RESTART):
            if step.current is None:
                continue

            def stop(item: ManagedContainer = step.current) -> None:
                self.progress.service(item.service, "stopping")
                self.engine.stop(item.id)

            jobs.append(stop)
        _run_all(jobs)

    def _start_all(self) -> list[ServiceOutcome]:
        items = start_items(self.plan)
        if not items:
            return []

        def run_lane(lane: list[StartItem]) -> list[ServiceOutcome]:
            outcomes = []
            for item in lane:
                if self.cancel.is_set():
                    outcomes.append(
                        ServiceOutcome(
                            item.service,
                            False,
                            0.0,
                            "not started: switch cancelled",
                            host=self.host,
                        )
                    )
                    continue
                outcome = self._start_one(item)
                outcomes.append(outcome)
                if not outcome.ready:
                    self.cancel.set()
            return outcomes

        groups = lanes(items)
        outcomes: list[ServiceOutcome] = []
        # A failure or a signal cancels the other lanes' waits; every lane has ended on return.
        for done in in_threads(
            [functools.partial(run_lane, lane) for lane in groups], on_failure=self.cancel.set
        ):
            outcomes.extend(done)
        # Failures first, so the message names the service that failed rather than a cancelled one.
        outcomes.sort(
            key=lambda o: (
                o.ready,
                o.detail.startswith("not started"),
                o.detail.startswith("cancelled"),
            )
        )
        return outcomes

    def _start_one(self, item: StartItem) -> ServiceOutcome:
        began = time.monotonic()

        def outcome(ready: bool, detail: str, tail: str = "") -> ServiceOutcome:
            return ServiceOutcome(
                item.service, ready, time.monotonic() - began, detail, tail, self.host
            )

        self.progress.service(item.service, "starting")
        try:
            if item.spec is not None:
                container_id = self.engine.create(item.spec, self.plan.profile, txn=self.txn)
                with self._lock:
                    self.created.append(container_id)
            else:
                assert item.existing is not None
                container_id = item.existing.id
            self.engine.start(container_id)
        except AitherError as exc:
            return outcome(False, exc.message)
        if item.port is None:
            return outcome(True, "started (no port to probe)")
        waited = wait_until_ready(
            self.engine,
            container_id,
            item.port,
            item.bind,
            item.checks,
            deadline=began + item.timeout_s,
            stop=self.cancel.is_set,
            pause=self.cancel.wait,
            on_detail=lambda detail: self.progress.service(item.service, "waiting", detail),
        )
        if waited.state == "ready" and self.model_step is not None:
            host = probe_host(item.bind, self.engine.endpoint, self.engine.address)
            failure = self.model_step(
                item,
                self.host,
                f"http://{netloc(host)}:{item.port}",
                lambda status, detail: self.progress.service(item.service, status, detail),
                self.cancel.is_set,
            )
            if failure is not None:
                if self.cancel.is_set():
                    return outcome(False, "cancelled: the switch is being rolled back")
                return outcome(False, failure)
        if waited.state == "ready":
            self.progress.service(item.service, "ready", f"{time.monotonic() - began:.1f}s")
            return outcome(True, "ready")
        if waited.state == "stopped":
            return outcome(False, "cancelled: the switch is being rolled back")
        if waited.state == "error":
            return outcome(False, waited.detail)
        if waited.state == "exited":
            return outcome(False, waited.detail, self._tail(container_id))
        return outcome(
            False,
            f"not ready after {item.timeout_s:g}s (last probe: {waited.detail})",
            self._tail(container_id),
        )

    def _tail(self, container_id: str) -> str:
        try:
            return self.engine.logs(container_id, tail=LOG_TAIL_LINES).rstrip()
        except AitherError:
            return ""

    def rollback(self, guard: SignalGuard) -> Rollback:
        self.cancel.set()
        self.progress.note("rolling back")
        return rollback_containers(
            self.engine,
            self.txn,
            self.intent,
            self.progress,
            self.created,
            should_stop_waiting=lambda: guard.during_rollback > 0,
        )


class Transaction:
    """One switch over any number of (engine, plan) parts, committed only when every part is
    ready: each part sets aside, starts and waits in parallel (`EnginePart.begin`); then the
    commit records are written (with several parts, after the decision is written on this
    machine, `decisions`); a failure, a Docker error or a signal anywhere rolls every part back.
    One engine is the case of one part."""

    def __init__(
        self,
        profile: str,
        parts: Mapping[str, tuple[DockerEngine, Plan]],
        progress: Progress,
        cancel: threading.Event | None = None,
        *,
        model_step: ModelStep | None = None,
    ) -> None:
        self.profile = profile
        self.progress = SafeProgress(progress)
        self.cancel = cancel if cancel is not None else threading.Event()
        self.parts = {
            name: EnginePart(
                engine,
                plan,
                host_progress(progress, name),
                self.cancel,
                host=name,
                model_step=model_step,
            )
            for name, (engine, plan) in parts.items()
            if plan.changes
        }
        self.several = len(parts) > 1 or any(name != LOCAL_HOST for name in parts)

    def apply(self) -> list[ServiceOutcome]:
        from aitherctl.switching import decisions

        everywhere = " on every host" if self.several else ""
        guard = SignalGuard(self.cancel, self.progress)
        with guard:
            try:
                outcomes = self._begin_all()
                signum = _signalled(self.cancel)
                if signum is not None:  # a signal caught in the main thread for a worker
                    guard.holding = True
                    raise Interrupted(signum)
                failed = [outcome for outcome in outcomes if not outcome.ready]
                if failed:
                    guard.hold()
                    first = failed[0]
                    summary = self._rollback(guard)
                    where = "" if first.host == LOCAL_HOST else f" on host {first.host!r}"
                    journal.record(
                        "rollback",
                        self.profile,
                        f"switch to {self.profile} failed "
                        f"({first.service}{where}: {first.detail}); "
                        + (summary if self.several else "rolled back"),
                    )
                    detail = first.log_tail and (
                        f"last lines of {first.service}'s log:\n{first.log_tail}"
                    )
                    raise SwitchFailedError(
                        f"service {first.service!r}{where} did not become ready: "
                        f"{first.detail}; {summary}",
                        detail=detail or None,
                    )
                # The point of no return: from the commit record on, signals no longer
                # interrupt and `recover` finishes the switch rather than undo it.
                guard.hold()
                self._commit_all()
            except Interrupted as exc:
                guard.hold()
                self.progress.note(f"{exc.name}: rolling back{everywhere}")
                exc.summary = self._rollback(guard)
                journal.record("rollback", self.profile, f"{exc.name} during switch: {exc.summary}")
                raise
            except SwitchFailedError:
                raise
            except AitherError as exc:
                guard.hold()
                self.cancel.set()
                self.progress.note(f"failed: {exc.message}; rolling back{everywhere}")
                summary = self._rollback(guard)
                journal.record("rollback", self.profile, f"{exc.message}; {summary}")
                raise SwitchFailedError(
                    f"{exc.message}; {summary}", detail=exc.detail, host=exc.host
                ) from None
            except Exception as exc:  # a bug must not leave the machine half-switched either
                guard.hold()
                self.cancel.set()
                summary = self._rollback(guard)
                raise SwitchFailedError(f"internal error ({exc!r}); {summary}") from exc
            problems = []
            for name, part in self.parts.items():
                try:
                    finish(part.engine, part.txn, part.intent)
                except AitherError as exc:
                    problems.append(
                        exc.message if not self.several else f"host {name!r}: {exc.message}"
                    )
                else:
                    decisions.forget_finished(part.txn)
            if problems:
                raise AitherError(
                    f"switched to {self.profile}, but cleaning up failed "
                    f"({'; '.join(problems)}); `aitherctl recover` finishes it"
                )
        return outcomes

    def _begin_all(self) -> list[ServiceOutcome]:
        """Every part at once; the first Docker error (with its host) is raised once all parts
        have stopped (a failure on one host cancels the waits on the others)."""
        if not self.parts:
            return []
        results: dict[str, list[ServiceOutcome]] = {}
        errors: list[AitherError] = []

        def run(name: str, part: EnginePart) -> None:
            try:
                results[name] = part.begin()
            except AitherError as exc:
                self.cancel.set()
                if name != LOCAL_HOST and exc.host is None:
                    exc.message = f"host {name!r}: {exc.message}"
                    exc.args = (exc.message,)
                    exc.host = name
                errors.append(exc)
            except BaseException:
                self.cancel.set()
                raise

        if len(self.parts) == 1:  # in this thread: a signal interrupts the wait itself
            [(name, part)] = self.parts.items()
            run(name, part)
        else:
            # A signal cancels every part; the wait goes on until each has stopped.
            in_threads(
                [functools.partial(run, name, part) for name, part in self.parts.items()],
                workers=len(self.parts),
                on_failure=self.cancel.set,
            )
        if errors:
            raise errors[0]
        outcomes = [outcome for items in results.values() for outcome in items]
        # Failures first, so the message names the service that failed, not a cancelled one.
        outcomes.sort(
            key=lambda o: (
                o.ready,
                o.detail.startswith("not started"),
                o.detail.startswith("cancelled"),
            )
        )
        return outcomes

    def _commit_all(self) -> None:
        """Commit records on every engine; if one cannot be written, those written are taken
        back and the error rolls everything back. With several parts the decision is written on
        this machine first (`aitherctl.switching.decisions`), so a crash between two engines'
        records still finishes every part on `recover`."""
        from aitherctl.switching import decisions

        decided = None
        if len(self.parts) > 1:
            decided = decisions.decide_commit(part.txn for part in self.parts.values())
        written: list[EnginePart] = []
        try:
            for part in self.parts.values():
                part.write_commit()
                written.append(part)
        except AitherError:
            if decided is not None:
                decisions.forget(decided)
            for part in written:
                with contextlib.suppress(AitherError):
                    part.engine.remove_record(
                        record_name(part.engine.namespace, part.txn, "commit")
                    )
            raise

    def _rollback(self, guard: SignalGuard) -> str:
        self.cancel.set()
        if not self.parts:
            return "rolled back (nothing had changed)"
        done: dict[str, Rollback] = {}

        def undo(name: str, part: EnginePart) -> None:
            done[name] = part.rollback(guard)

        if len(self.parts) == 1:
            [(name, part)] = self.parts.items()
            undo(name, part)
        else:
            in_threads(
                [functools.partial(undo, name, part) for name, part in self.parts.items()],
                workers=len(self.parts),
            )
        if not self.several:
            return done[LOCAL_HOST].summary
        said = []
        for name, rollback in done.items():
            label = "this machine" if name == LOCAL_HOST else f"host {name!r}"
            summary = rollback.summary
            if rollback.engine_lost:
                summary += (
                    " — its switch record stays there; `aitherctl recover` (or the next switch) "
                    "finishes the rollback once it is reachable"
                )
            said.append(f"{label}: {summary}")
        return "; ".join(said)


class HostProgress:
    """Progress lines with the host named after each service on another host (`svc@box2`)."""

    def __init__(self, inner: Progress, host: str) -> None:
        self.inner = inner
        self.suffix = "" if host == LOCAL_HOST else f"@{host}"
        self.prefix = "" if host == LOCAL_HOST else f"host {host}: "

    def note(self, message: str) -> None:
        self.inner.note(self.prefix + message)

    def service(self, service: str, status: str, detail: str = "") -> None:
        self.inner.service(service + self.suffix, status, detail)


def host_progress(progress: Progress, host: str) -> Progress:
    return progress if host == LOCAL_HOST else HostProgress(progress, host)


def _run_all(jobs: Sequence[Callable[[], None]]) -> None:
    if not jobs:
        return
    in_threads(jobs)  # each job's error once all have ended, the first in order


def finish(engine: DockerEngine, txn: str, intent: Intent | None) -> None:
    """Complete a committed switch: remove what was set aside, set restart policies, drop the
    records. Safe to run again (recover runs it after a crash mid-commit)."""
    containers = engine.list_managed()
    jobs: list[Callable[[], None]] = [
        functools.partial(engine.remove, item.id)
        for item in containers
        if item.aside and item.name.endswith(c.ASIDE_MARK + txn)
    ]

    def hint(profile: str) -> None:
        with contextlib.suppress(AitherError):  # a hint for readers, never worth failing for
            write_active(engine, profile, containers)

    def set_policy(item: ManagedContainer) -> None:
        with contextlib.suppress(AitherError):
            engine.set_restart_policy(item.id, restart_policy(item.gpus))

    if intent is not None:
        jobs.append(functools.partial(hint, intent.profile))
    # Every running service whose policy differs, kept ones included (older aitherctl set
    # `unless-stopped`), and those this switch created (with Docker's `no`, so that one that
    # exits during its wait is seen exited, not restarted).
    jobs += [
        functools.partial(set_policy, item)
        for item in containers
        if not item.aside and item.running and item.restart_policy != restart_policy(item.gpus)
    ]
    _run_all(jobs)  # independent Docker calls, at once: a switch's last step is on its clock
    for kind in ("txn", "commit"):
        engine.remove_record(record_name(engine.namespace, txn, kind))


# ---- rollback -----------------------------------------------------------------------------------


def rollback_containers(
    engine: DockerEngine,
    txn: str,
    intent: Intent | None,
    progress: Progress,
    created: Sequence[str] = (),
    *,
    wait: bool = True,
    should_stop_waiting: Callable[[], bool] = lambda: False,
) -> Rollback:
    """Undo a switch that did not commit. Best effort per container: each step is tried on its
    own and a failure is reported, not raised. Returns a summary for the error message."""
    problems: list[str] = []
    lost = False
    try:
        containers = engine.list_managed()
    except AitherError as exc:
        containers = []
        problems.append(f"could not list containers ({exc.message})")
        lost = True
    # 1. Remove what this switch created (its label finds one created just before a crash).
    doomed = set(created) | {item.id for item in containers if item.txn == txn}
    for container_id in doomed:
        try:
            engine.remove(container_id)
        except AitherError as exc:
            lost = lost or isinstance(exc, DockerUnavailableError)
            problems.append(f"could not remove a new container {container_id[:12]} ({exc.message})")
    # 2. Containers it resumed were stopped before; those it restarted were running.
    if intent is not None:
        for container_id in intent.resumed:
            with contextlib.suppress(AitherError):
                engine.stop(container_id)
        for container_id in intent.restarted:
            try:
                engine.start(container_id)
            except AitherError as exc:
                lost = lost or isinstance(exc, DockerUnavailableError)
                problems.append(f"could not start {container_id[:12]} again ({exc.message})")
    # 3. Rename every set-aside container back and start those that were running.
    entries: dict[str, AsideEntry] = {e.id: e for e in intent.aside} if intent else {}
    for item in containers:
        if item.aside and item.name.endswith(c.ASIDE_MARK + txn) and item.id not in entries:
            # No record of it (the record was lost): it was set aside by a switch, so it served.
            entries[item.id] = AsideEntry(item.id, item.service, item.original_name, True)
    present = {item.id: item for item in containers}
    restored: list[AsideEntry] = []
    failed: list[str] = []
    for entry in entries.values():
        if containers and entry.id not in present:
            continue  # never set aside (the crash came first) or already gone: nothing to do
        progress.service(entry.service, "restoring")
        try:
            current = present.get(entry.id)
            if current is None or current.name != entry.name:
                engine.rename(entry.id, entry.name)
            if entry.was_running:
                engine.start(entry.id)
            restored.append(entry)
        except AitherError as exc:
            lost = lost or isinstance(exc, DockerUnavailableError)
            failed.append(f"{entry.service} ({exc.message})")
            progress.service(entry.service, "not restored", exc.message)
    if wait:
        failed += _wait_restored(engine, restored, progress, should_stop_waiting)
    running_again = [e.service for e in restored if e.was_running]
    summary = "rolled back (restored: " + (", ".join(sorted(running_again)) or "nothing") + ")"
    if failed:
        summary += "; could not restore: " + ", ".join(failed)
    if problems:
        summary += "; " + "; ".join(problems)
    if not lost:
        for kind in ("txn", "commit"):
            with contextlib.suppress(AitherError):
                engine.remove_record(record_name(engine.namespace, txn, kind))
    return Rollback(summary, lost)


def _wait_restored(
    engine: DockerEngine,
    restored: Sequence[AsideEntry],
    progress: Progress,
    should_stop_waiting: Callable[[], bool],
) -> list[str]:
    failed: list[str] = []
    try:
        current = {item.id: item for item in engine.list_managed()}
    except AitherError:
        return failed
    deadline = time.monotonic() + RESTORE_TIMEOUT_S
    for entry in restored:
        item = current.get(entry.id)
        if item is None or not entry.was_running:
            continue
        if item.port is None:
            progress.service(entry.service, "restored")
            continue
        waited = wait_until_ready(
            engine,
            item.id,
            item.port,
            item.bind,
            item.health_checks,
            deadline=deadline,
            stop=should_stop_waiting,
        )
        if waited.state == "ready":
            progress.service(entry.service, "restored")
        elif waited.state == "exited":
            failed.append(f"{entry.service} (exited while restoring)")
            progress.service(entry.service, "failed", "exited while restoring")
        else:
            progress.service(entry.service, "started", "not answering yet")
    return failed


@dataclass(frozen=True, slots=True)
class Wait:
    """How waiting for a container to be ready ended (ready, exited, stopped, timeout or error),
    and what was last seen."""

    state: str  # ready | exited | stopped (told to stop) | timeout | error (Docker)
    detail: str


def wait_until_ready(
    engine: DockerEngine,
    container_id: str,
    port: int,
    bind: str,
    checks: tuple[HttpCheck, ...],
    *,
    deadline: float,
    stop: Callable[[], bool],
    pause: Callable[[float], object] = time.sleep,
    on_detail: Callable[[str], None] = lambda _detail: None,
) -> Wait:
    """Wait until the container's readiness probe answers, it exits, `stop()` says so, or the
    deadline passes. Probes time out after a second, so a stop is seen within about one."""
    host = probe_host(bind, engine.endpoint, engine.address)
    detail = "no answer yet"
    with ReadinessProbe() as readiness:
        while True:
            if stop():
                return Wait("stopped", detail)
            try:
                current = engine.get(container_id)
            except AitherError as exc:
                return Wait("error", exc.message)
            if current.state in ("exited", "dead"):
                return Wait("exited", f"container exited with code {current.exit_code}")
            result = readiness.check(host, port, checks, timeout_s=PROBE_TIMEOUT_S)
            if result.ok:
                return Wait("ready", "ready")
            if result.detail != detail:
                detail = result.detail
                on_detail(detail)
            if time.monotonic() >= deadline:
                return Wait("timeout", detail)
            pause(POLL_S)


# ---- recover -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Recovery:
    """What `recover` did with one switch that did not end: rolled it back or finished it."""

    txn: str
    profile: str
    action: str  # "rolled back" or "finished"
    summary: str


def pending(engine: DockerEngine) -> bool:
    """Whether a switch left records or set-aside containers behind."""
    if any(is_switch_record(labels) for labels in engine.records().values()):
        return True
    # A set-aside container is known by its name: the listing alone, one request.
    return any(item.aside for item in engine.list_managed(inspect=False))


def recover(engine: DockerEngine, progress: Progress) -> list[Recovery]:
    """Finish or undo every switch that did not end (the caller holds the switch lock, so none
    is still running). Returns what was done, one entry per switch."""
    progress = SafeProgress(progress)
    records = engine.records()
    intents: dict[str, Intent | None] = {}
    committed: set[str] = set()
    for labels in records.values():
        txn = labels.get(c.LABEL_TXN)
        if not txn:
            continue
        if labels.get(LABEL_KIND) == "commit":
            committed.add(txn)
            intents.setdefault(txn, None)
        else:
            try:
                intents[txn] = Intent.from_json(labels.get(LABEL_INTENT, ""))
            except (ValueError, KeyError, TypeError):
                intents.setdefault(txn, None)
    for item in engine.list_managed():
        if item.aside:
            intents.setdefault(item.name.rsplit(c.ASIDE_MARK, 1)[1], None)
    done = []
    from aitherctl.switching import decisions

    for txn, intent in intents.items():
        profile = intent.profile if intent else "?"
        # A part of a switch across hosts whose commit this machine decided, although the crash
        # came before this host's own commit record was written.
        if txn in committed or decisions.committed(txn):
            progress.note(f"finishing an interrupted switch to {profile} (it had committed)")
            finish(engine, txn, intent)
            decisions.forget_finished(txn)
            done.append(Recovery(txn, profile, "finished", "set-aside containers removed"))
            journal.record("recover", profile, f"finished the interrupted switch to {profile}")
        else:
            progress.note(f"rolling back an interrupted switch to {profile}")
            summary = rollback_containers(engine, txn, intent, progress).summary
            done.append(Recovery(txn, profile, "rolled back", summary))
            journal.record("recover", profile, f"interrupted switch to {profile}: {summary}")
    return done


__all__ = [
    "EnginePart",
    "HostProgress",
    "Interrupted",
    "Progress",
    "Recovery",
    "Rollback",
    "ServiceOutcome",
    "SignalCancel",
    "SignalGuard",
    "Transaction",
    "lanes",
    "pending",
    "recover",
    "restart_policy",
]
