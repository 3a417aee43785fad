"""A profile across several Docker hosts: one plan, one lock per engine, one transaction.

A profile's `hosts:` names other Docker engines (`ssh://`, `tcp://` with TLS, `unix://`, a
context) and each service says `host:` (default `local`: DOCKER_HOST or the Docker context). A
switch then works on every engine involved: the profile's hosts, and the hosts the previous
multi-host switch left services on (remembered in the state folder, `hosts.json`), so moving to a
one-machine profile stops what ran on the other box.

- Planning is per host, with that host's own GPU readings (NVML here; `nvidia-smi` in a
  short-lived container on the other engine, `aitherctl.adapters.remote_gpu`), so the VRAM
  arithmetic is per host and GPU. Every engine is reached before anything changes; one that cannot
  be is named, and nothing changes anywhere.
- Execution takes every engine's switch lock (in one order, so two switches cannot deadlock),
  recovers an interrupted switch on each, re-plans, pulls missing images on the host that runs
  them, and applies one transaction: each host's part sets aside, starts and waits in parallel
  (`Transaction.begin`); only when every service on every host answers are the commit records
  written; otherwise, or on a Docker error on any host, or a signal, every host rolls back.
- A host lost in the middle (engine or SSH gone) cannot be rolled back from here: its records stay
  on that engine and the message says so; the next switch, `up`, `down` or `aitherctl recover`
  finishes the rollback there once it is reachable again.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Literal

from aitherctl.adapters.docker_engine import DockerEngine
from aitherctl.adapters.host_memory import (
    remember_hosts,
    remembered_hosts,
    remembered_profile,
)
from aitherctl.adapters.profile_store import ProfileCatalog
from aitherctl.core.gpu import GpuInventory
from aitherctl.core.profile import LOCAL_HOST, Host, Profile
from aitherctl.errors import (
    AitherError,
    DockerError,
    DockerUnavailableError,
    RefusedError,
    SwitchFailedError,
)
from aitherctl.switching import journal
from aitherctl.switching.lock import engine_lock, engine_lock_key
from aitherctl.switching.plan import Action, Plan
from aitherctl.switching.stack import ManagedContainer
from aitherctl.switching.switch import Declined, Prepared, ensure_images, prepare
from aitherctl.switching.transaction import (
    Interrupted,
    Progress,
    Recovery,
    ServiceOutcome,
    SignalGuard,
    Transaction,
    finish,
    pending,
    recover,
)


def hosts_involved(profile: Profile | None) -> dict[str, Host]:
    """The other hosts a command must look at: the profile's, and those remembered."""
    hosts = dict(remembered_hosts())
    if profile is not None:
        used = {svc.host for svc in profile.services.values()}
        hosts.update({name: host for name, host in profile.hosts.items() if name in used})
    return hosts


def connect_hosts(
    local: Callable[[], DockerEngine], hosts: Mapping[str, Host]
) -> dict[str, DockerEngine]:
    """Every engine, `local` first, reached in parallel. When one cannot be reached, the error
    names each such host and nothing has changed."""
    makers: dict[str, Callable[[], DockerEngine]] = {LOCAL_HOST: local}
    for name, host in hosts.items():

        def make(host: Host = host) -> DockerEngine:
            return DockerEngine.connect_host(host.name, host.docker, host.address)

        makers[name] = make
    engines: dict[str, DockerEngine] = {}
    problems: list[str] = []
    with ThreadPoolExecutor(max_workers=len(makers)) as pool:
        futures = {name: pool.submit(make) for name, make in makers.items()}
        for name, future in futures.items():
            try:
                engines[name] = future.result()
            except AitherError as exc:
                problems.append(exc.message)
    if problems:
        for engine in engines.values():
            engine.close()
        raise DockerUnavailableError("; ".join(problems) + "; nothing was changed")
    return engines


def host_inventory(
    name: str,
    engine: DockerEngine,
    profile: Profile,
    local_reader: Callable[[], GpuInventory],
) -> GpuInventory:
    """GPU readings taken on the host itself: NVML here, `nvidia-smi` in a short-lived
    container there (in the image of one of its GPU services, pulled first if missing)."""
    if name == LOCAL_HOST:
        return local_reader()
    images = sorted({svc.image for svc in profile.services.values() if svc.uses_gpu})
    if not images:
        return GpuInventory(error=f"no GPU reading taken on host {name!r} (no GPU service there)")
    from aitherctl.adapters.remote_gpu import read_inventory

    image = images[0]
    if not engine.image_exists(image):
        engine.pull(image)
    inventory = read_inventory(engine.client, image)
    if inventory.error:
        return GpuInventory(error=f"on host {name!r}: {inventory.error}")
    return inventory


# ---- the plan -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostsPrepared:
    """One prepared part per engine, in the order local first."""

    profile: str
    parts: dict[str, Prepared]

    @property
    def plan(self) -> Plan:
        """Every host's steps in one plan (`hosts` gives each step's host)."""
        return Plan(self.profile, tuple(s for p in self.parts.values() for s in p.plan.steps))

    @property
    def hosts(self) -> list[str]:
        return [name for name, part in self.parts.items() for _ in part.plan.steps]

    @property
    def changes(self) -> bool:
        return any(part.plan.changes for part in self.parts.values())

    def signature(self) -> tuple[tuple[str, object], ...]:
        return tuple((name, part.plan.signature()) for name, part in self.parts.items())


def prepare_hosts(
    engines: Mapping[str, DockerEngine],
    profile: Profile,
    local_reader: Callable[[], GpuInventory],
    catalog: ProfileCatalog | None = None,
) -> HostsPrepared:
    """Plan and check each host's share of `profile` (a host with none of its services: stop
    what runs there). Raises RefusedError naming the host when one part cannot work."""
    parts: dict[str, Prepared] = {}
    for name, engine in engines.items():
        share = profile.on_host(name)
        try:
            inventory = host_inventory(name, engine, share, local_reader)
            parts[name] = prepare(engine, share, inventory, catalog=catalog)
        except RefusedError as exc:
            if name == LOCAL_HOST:
                raise
            raise RefusedError(f"host {name!r}: {exc.message}", detail=exc.detail) from None
    return HostsPrepared(profile.name, parts)


class HostsPlanChanged(RefusedError):
    def __init__(self, fresh: HostsPrepared) -> None:
        super().__init__(
            "the plan changed since it was shown (another switch ran, or a container changed); "
            "nothing was changed: review the new plan and confirm again"
        )
        self.fresh = fresh


# ---- the transaction ----------------------------------------------------------------------------


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


@dataclass(slots=True)
class HostsResult:
    profile: str
    prepared: HostsPrepared
    outcomes: list[tuple[str, ServiceOutcome]] = field(default_factory=list)
    seconds: float = 0.0
    recovered: str | None = None

    @property
    def plan(self) -> Plan:
        return self.prepared.plan


class HostsTransaction:
    """Each host's part of one switch, committed only when every part is ready."""

    def __init__(
        self,
        parts: Mapping[str, tuple[DockerEngine, Plan]],
        progress: Progress,
        cancel: threading.Event | None = None,
    ) -> None:
        self.progress = progress
        self.cancel = cancel if cancel is not None else threading.Event()
        self.txns = {
            name: Transaction(engine, plan, HostProgress(progress, name), self.cancel)
            for name, (engine, plan) in parts.items()
            if plan.changes
        }

    def apply(self, profile: str) -> list[tuple[str, ServiceOutcome]]:
        from aitherctl.switching import decisions

        guard = SignalGuard(self.cancel, self.progress)
        with guard:
            try:
                outcomes = self._begin_all()
                failed = [(name, o) for name, o in outcomes if not o.ready]
                if failed:
                    guard.hold()
                    name, first = failed[0]
                    summary = self._rollback(guard)
                    where = "" if name == LOCAL_HOST else f" on host {name!r}"
                    journal.record(
                        "rollback", profile, f"switch to {profile} failed ({first.service}"
                        f"{where}: {first.detail}); {summary}",
                    )
                    detail = first.log_tail and (
                        f"last lines of {first.service}'s log:\n{first.log_tail}"
                    )
                    raise SwitchFailedError(
                        f"service {first.service!r}{where} did not become ready: "
                        f"{first.detail}; {summary}",
                        detail=detail or None,
                    )
                guard.hold()
                self._commit_all()
            except Interrupted as exc:
                guard.hold()
                self.progress.note(f"{exc.name}: rolling back on every host")
                exc.summary = self._rollback(guard)
                journal.record("rollback", profile, f"{exc.name} during switch: {exc.summary}")
                raise
            except SwitchFailedError:
                raise
            except AitherError as exc:
                guard.hold()
                self.cancel.set()
                self.progress.note(f"failed: {exc.message}; rolling back on every host")
                summary = self._rollback(guard)
                journal.record("rollback", profile, f"{exc.message}; {summary}")
                raise SwitchFailedError(f"{exc.message}; {summary}", detail=exc.detail) from None
            except Exception as exc:
                guard.hold()
                self.cancel.set()
                summary = self._rollback(guard)
                raise SwitchFailedError(f"internal error ({exc!r}); {summary}") from exc
            problems = []
            for name, txn in self.txns.items():
                try:
                    finish(txn.engine, txn.txn, txn.intent)
                except AitherError as exc:
                    problems.append(f"host {name!r}: {exc.message}")
                else:
                    decisions.forget_finished(txn.txn)
            if problems:
                raise AitherError(
                    f"switched to {profile}, but cleaning up failed ({'; '.join(problems)}); "
                    "`aitherctl recover` finishes it"
                )
        return outcomes

    def _begin_all(self) -> list[tuple[str, ServiceOutcome]]:
        """Every host's part at once; the first Docker error (named with its host) is raised
        once all parts have stopped (a failure on one host cancels the waits on the others)."""
        if not self.txns:
            return []
        results: dict[str, list[ServiceOutcome]] = {}
        errors: list[AitherError] = []

        def run(name: str, txn: Transaction) -> None:
            try:
                results[name] = txn.begin()
            except AitherError as exc:
                self.cancel.set()
                if name != LOCAL_HOST and not exc.message.startswith("host "):
                    exc = AitherError(f"host {name!r}: {exc.message}", detail=exc.detail)
                errors.append(exc)
            except BaseException:
                self.cancel.set()
                raise

        with ThreadPoolExecutor(max_workers=len(self.txns)) as pool:
            futures = [pool.submit(run, name, txn) for name, txn in self.txns.items()]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                self.cancel.set()  # the pool's exit waits for every part to stop
                raise
        if errors:
            raise errors[0]
        outcomes = [(name, o) for name, items in results.items() for o in items]
        outcomes.sort(
            key=lambda pair: (
                pair[1].ready,
                pair[1].detail.startswith("not started"),
                pair[1].detail.startswith("cancelled"),
            )
        )
        return outcomes

    def _commit_all(self) -> None:
        """Commit records on every host; if one cannot be written, the ones written are taken
        back and the error rolls everything back. With several hosts the decision is written on
        this machine first (`aitherctl.switching.decisions`), so a crash between two hosts'
        records still finishes every part on `recover`."""
        from aitherctl.switching import decisions
        from aitherctl.switching.records import record_name

        decided = None
        if len(self.txns) > 1:
            decided = decisions.decide_commit(t.txn for t in self.txns.values())
        written: list[Transaction] = []
        try:
            for txn in self.txns.values():
                txn.write_commit()
                written.append(txn)
        except AitherError:
            if decided is not None:
                decisions.forget(decided)
            for txn in written:
                with contextlib.suppress(AitherError):
                    txn.engine.remove_record(record_name(txn.engine.namespace, txn.txn, "commit"))
            raise

    def _rollback(self, guard: SignalGuard) -> str:
        self.cancel.set()
        if not self.txns:
            return "rolled back (nothing had changed)"
        summaries: dict[str, str] = {}

        def undo(name: str, txn: Transaction) -> None:
            summaries[name] = txn.rollback(guard)

        with ThreadPoolExecutor(max_workers=len(self.txns)) as pool:
            list(pool.map(lambda item: undo(*item), self.txns.items()))
        if list(summaries) == [LOCAL_HOST]:
            return summaries[LOCAL_HOST]
        parts = []
        for name, said in summaries.items():
            label = "this machine" if name == LOCAL_HOST else f"host {name!r}"
            summary = said
            if "lost the Docker engine" in said or "could not list containers" in said:
                summary += (
                    " — its switch record stays there; `aitherctl recover` (or the next switch) "
                    "finishes the rollback once it is reachable"
                )
            parts.append(f"{label}: {summary}")
        return "; ".join(parts)


# ---- the whole switch ---------------------------------------------------------------------------


def switch_hosts(
    local: Callable[[], DockerEngine],
    catalog: ProfileCatalog,
    profile_name: str,
    local_reader: Callable[[], GpuInventory],
    progress: Progress,
    *,
    confirm: Callable[[HostsPrepared, bool], bool] | None = None,
    lock_timeout_s: float = 900.0,
    attempts: int = 3,
    cancel: threading.Event | None = None,
    engines: Mapping[str, DockerEngine] | None = None,
) -> HostsResult:
    """Move every host to `profile_name`; see the module's docstring."""
    profile = catalog.load(profile_name)
    hosts = hosts_involved(profile)
    owned = engines is None
    engines = dict(engines) if engines is not None else connect_hosts(local, hosts)
    # Every host this switch may touch is remembered before it starts, so that `recover`, `ps`
    # and the next switch find a host left half-switched (a kill, a lost engine).
    remember_hosts(remembered_profile() or "", hosts)
    try:
        recovered = _recover_all(engines, progress, lock_timeout_s, cancel)
        prepared = prepare_hosts(engines, profile, local_reader, catalog)
        changed = False
        for _ in range(attempts):
            if confirm is not None and prepared.changes and not confirm(prepared, changed):
                raise Declined("not confirmed; nothing was changed")
            try:
                result = _execute(
                    engines, profile, prepared, local_reader, catalog, progress,
                    lock_timeout_s=lock_timeout_s, cancel=cancel,
                )
            except HostsPlanChanged as exc:
                progress.note("the plan changed while waiting; here is the new one")
                prepared, changed = exc.fresh, True
                continue
            if recovered:
                result.recovered = "; ".join(filter(None, (recovered, result.recovered)))
            used = {svc.host for svc in profile.services.values()}
            remember_hosts(
                profile.name, {n: h for n, h in profile.hosts.items() if n in used}
            )
            return result
        raise RefusedError("the plan kept changing under another switch; try again")
    finally:
        if owned:
            for engine in engines.values():
                engine.close()


class _NothingChanged:
    """Around the steps before the transaction: a Docker error there (a host lost while its
    records are read or its images checked) changed nothing, and the message says so."""

    def __init__(self) -> None:
        self.active = True

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> Literal[False]:
        if (
            self.active
            and isinstance(exc, (DockerUnavailableError, DockerError))
            and "nothing was changed" not in exc.message
        ):
            raise type(exc)(f"{exc.message}; nothing was changed", detail=exc.detail) from None
        return False



@contextlib.contextmanager
def _all_locks(
    engines: Mapping[str, DockerEngine],
    progress: Progress,
    timeout_s: float,
    cancel: threading.Event | None = None,
) -> Iterator[None]:
    """Every engine's switch lock, taken in the order of their keys (one lock per key)."""
    with contextlib.ExitStack() as stack:
        by_key = {engine_lock_key(engine): engine for engine in engines.values()}
        for key in sorted(by_key):
            stack.enter_context(
                engine_lock(
                    by_key[key], timeout_s=timeout_s, on_wait=progress.note, cancel=cancel
                )
            )
        yield None


def _recover_all(
    engines: Mapping[str, DockerEngine],
    progress: Progress,
    lock_timeout_s: float,
    cancel: threading.Event | None = None,
) -> str:
    if not any(pending(engine) for engine in engines.values()):
        return ""
    done = []
    with _all_locks(engines, progress, lock_timeout_s, cancel):
        for name, engine in engines.items():
            if pending(engine):
                for item in recover(engine, HostProgress(progress, name)):
                    where = "" if name == LOCAL_HOST else f" on host {name}"
                    done.append(f"{item.action} a switch to {item.profile}{where}")
    return "; ".join(done)


def _execute(  # noqa: PLR0917
    engines: Mapping[str, DockerEngine],
    profile: Profile,
    prepared: HostsPrepared,
    local_reader: Callable[[], GpuInventory],
    catalog: ProfileCatalog,
    progress: Progress,
    *,
    lock_timeout_s: float,
    cancel: threading.Event | None,
) -> HostsResult:
    started = time.monotonic()
    before = _NothingChanged()
    with _all_locks(engines, progress, lock_timeout_s, cancel), before:
        recovered = []
        for name, engine in engines.items():
            if pending(engine):
                for item in recover(engine, HostProgress(progress, name)):
                    recovered.append(f"{item.action} a switch to {item.profile}")
        fresh = prepare_hosts(engines, profile, local_reader, catalog)
        if fresh.signature() != prepared.signature():
            raise HostsPlanChanged(fresh)
        result = HostsResult(profile.name, fresh, recovered="; ".join(recovered) or None)
        if not fresh.changes:
            return result
        for name, part in fresh.parts.items():
            try:
                ensure_images(engines[name], part.plan, HostProgress(progress, name))
            except AitherError as exc:
                if name == LOCAL_HOST:
                    raise
                raise RefusedError(f"host {name!r}: {exc.message}", detail=exc.detail) from None
        transaction = HostsTransaction(
            {name: (engines[name], part.plan) for name, part in fresh.parts.items()},
            progress,
            cancel,
        )
        before.active = False  # from here on the transaction says what it did
        result.outcomes = transaction.apply(profile.name)
    result.seconds = time.monotonic() - started
    counts = {action: len(fresh.plan.of(action)) for action in Action}
    journal.record(
        "switch",
        profile.name,
        f"{profile.name} on {len(engines)} hosts: {counts[Action.START]} started, "
        f"{counts[Action.RECREATE]} recreated, {counts[Action.STOP]} stopped, "
        f"{counts[Action.KEEP]} kept in {result.seconds:.1f}s",
    )
    return result


def _remembered_engines(problems: list[str]) -> Iterator[tuple[str, DockerEngine]]:
    """Each remembered host's engine in turn (the caller closes it); one that cannot be reached
    is skipped, its reason added to `problems`."""
    for name, host in sorted(remembered_hosts().items()):
        try:
            yield name, DockerEngine.connect_host(name, host.docker, host.address)
        except AitherError as exc:
            problems.append(exc.message)


def find_on_other_hosts(service: str) -> tuple[DockerEngine, ManagedContainer] | None:
    """The container of `service` on one of the remembered hosts (for `logs`), or None. The
    engine is left open for the caller to read from."""
    from aitherctl.switching.state import observe

    problems: list[str] = []
    for _name, engine in _remembered_engines(problems):
        item = observe(engine).container(service)
        if item is not None:
            return engine, item
        engine.close()
    if problems:
        from aitherctl.errors import NotFoundError

        raise NotFoundError(
            f"no container for service {service!r} on the hosts that answered; "
            + "; ".join(problems)
        )
    return None


def recover_other_hosts(progress: Progress) -> list[Recovery]:
    """`aitherctl recover` on every remembered host, each under its lock; a host that still
    cannot be reached raises, naming it (what was recovered elsewhere is kept)."""
    done: list[Recovery] = []
    problems: list[str] = []
    for name, engine in _remembered_engines(problems):
        try:
            with engine_lock(engine, on_wait=progress.note):
                for item in recover(engine, HostProgress(progress, name)):
                    done.append(replace(item, profile=f"{item.profile} (host {name})"))
        finally:
            engine.close()
    if problems:
        raise DockerUnavailableError(
            "; ".join(problems) + " — run `aitherctl recover` again once it answers"
        )
    return done


def down_across(
    local: Callable[[], DockerEngine],
    services: Sequence[str] | None,
    progress: Progress,
    *,
    confirm: Callable[[Prepared, bool], bool] | None = None,
) -> list[str]:
    """`down` on this machine and every remembered host: the named services wherever they
    run (every aitherctl container with None). An unknown name is an error only when no host
    has it."""
    from aitherctl.switching.state import observe
    from aitherctl.switching.switch import prepare_down, run_change

    engines = connect_hosts(local, remembered_hosts())
    try:
        found: dict[str, list[str] | None] = {}
        for name, engine in engines.items():
            present = {i.service for i in observe(engine).containers if not i.aside}
            if services is None:
                if present:
                    found[name] = None
            elif wanted := [s for s in services if s in present]:
                found[name] = wanted
        missing = [s for s in services or [] if not any(s in (v or []) for v in found.values())]
        if missing:
            from aitherctl.errors import NotFoundError

            raise NotFoundError(
                f"no container for service {', '.join(map(repr, missing))} on any host "
                "(see `aitherctl ps`)"
            )
        stopped: list[str] = []
        for name, chosen in found.items():
            engine = engines[name]
            result = run_change(
                engine,
                functools.partial(prepare_down, engine, chosen),
                HostProgress(progress, name),
                confirm=confirm,
            )
            suffix = "" if name == LOCAL_HOST else f"@{name}"
            stopped += [step.service + suffix for step in result.plan.of(Action.STOP)]
        if services is None:
            remember_hosts("", {})
        return sorted(stopped)
    finally:
        for engine in engines.values():
            engine.close()


def up_across(  # noqa: PLR0917
    local: Callable[[], DockerEngine],
    catalog: ProfileCatalog,
    profile: Profile,
    local_reader: Callable[[], GpuInventory],
    progress: Progress,
    services: Sequence[str] | None,
) -> tuple[list[str], dict[str, str], float]:
    """`up` for a profile on several hosts: each host's named (default: resident) services,
    with that host's readings; nothing is stopped. Returns started, URLs and seconds."""
    from aitherctl.adapters.http_probe import probe_host
    from aitherctl.ops.endpoints import base_url
    from aitherctl.switching.switch import switch

    chosen = list(services) if services else sorted(profile.resident)
    for name in chosen:
        profile.service(name)
    by_host: dict[str, list[str]] = {}
    for name in chosen:
        by_host.setdefault(profile.services[name].host, []).append(name)
    hosts = {n: h for n, h in profile.hosts.items() if n in by_host}
    engines = connect_hosts(local, hosts)
    started_at = time.monotonic()
    started: list[str] = []
    urls: dict[str, str] = {}
    try:
        for host, names in by_host.items():
            engine = engines[host]
            share = profile.on_host(host)

            def reader(host: str = host, engine: DockerEngine = engine,
                       share: Profile = share) -> GpuInventory:
                return host_inventory(host, engine, share, local_reader)

            result = switch(engine, catalog, profile.name, reader, HostProgress(progress, host),
                            only=names)
            started += [o.service for o in result.outcomes if o.ready]
            for name in names:
                svc = profile.services[name]
                where = probe_host(svc.bind, engine.endpoint, engine.address)
                urls[name] = base_url(svc.engine.value, where, svc.port)
        remember_hosts(profile.name, {**remembered_hosts(), **hosts})
        return started, urls, time.monotonic() - started_at
    finally:
        for engine in engines.values():
            engine.close()


def multi_host(profile: Profile) -> bool:
    """Whether a switch to `profile` must go through here: it uses another host, or the last
    switch left services on one."""
    return any(svc.host != LOCAL_HOST for svc in profile.services.values()) or bool(
        remembered_hosts()
    )


__all__ = [
    "HostsPrepared",
    "HostsResult",
    "HostsTransaction",
    "connect_hosts",
    "hosts_involved",
    "multi_host",
    "prepare_hosts",
    "remember_hosts",
    "remembered_hosts",
    "switch_hosts",
]
