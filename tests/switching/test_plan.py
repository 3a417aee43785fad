"""Plan computation: keep, recreate, stop, start."""

from __future__ import annotations

from aitherctl.docker.stack import ManagedContainer, infer_active_profile
from aitherctl.engines.registry import build_container
from aitherctl.profiles.profile import Engine, Health, Service
from aitherctl.switching.plan import Action, compute_plan


def spec(name: str, port: int, model: str = "/m.gguf", **extra: object):  # type: ignore[no-untyped-def]
    service = Service(
        name=name,
        engine=Engine.LLAMACPP,
        image="img",
        port=port,
        model=model,
        health=Health(),
        **extra,
    )  # type: ignore[arg-type]
    return build_container(service, {})


def container(
    target, *, profile: str = "a", state: str = "running", created: str = "1"
) -> ManagedContainer:  # type: ignore[no-untyped-def]
    return ManagedContainer.from_labels(
        id=f"id-{target.service}-{created}",
        name=f"aither-{target.service}",
        state=state,
        image=target.image,
        labels=target.labels("default", profile),
        created_at=created,
    )


def actions(plan) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {step.service: step.action.value for step in plan.steps}


def test_plan_keeps_recreates_stops_and_starts() -> None:
    keep, change, gone = spec("keep", 1), spec("change", 2), spec("gone", 3)
    current = [container(keep), container(change), container(gone)]
    target = {"keep": keep, "change": spec("change", 2, model="/other.gguf"), "new": spec("new", 4)}
    plan = compute_plan("b", current, target)
    assert actions(plan) == {"keep": "keep", "change": "recreate", "gone": "stop", "new": "start"}
    assert [step.action for step in plan.steps] == [
        Action.STOP,
        Action.RECREATE,
        Action.START,
        Action.KEEP,
    ]
    recreate = plan.of(Action.RECREATE)[0]
    assert recreate.reason == "spec changed: model /m.gguf → /other.gguf"
    assert {s.service for s in plan.to_start} == {"change", "new"}
    assert {c.service for c in plan.to_stop} == {"change", "gone"}


def test_same_target_is_a_no_op() -> None:
    a = spec("a", 1)
    plan = compute_plan("p", [container(a)], {"a": a})
    assert not plan.changes


def test_exited_container_is_resumed_if_unchanged_else_recreated_and_duplicates_removed() -> None:
    a = spec("a", 1)
    plan = compute_plan("p", [container(a, state="exited")], {"a": a})
    assert actions(plan) == {"a": "resume"}  # after a reboot: the same container starts again
    changed = compute_plan("p", [container(a, state="exited")], {"a": spec("a", 1, model="/x")})
    assert actions(changed) == {"a": "recreate"}
    assert changed.steps[0].reason == "not running (exited)"
    dup = compute_plan(
        "p", [container(a, created="1"), container(a, created="2", state="exited")], {"a": a}
    )
    assert [(s.action.value, s.reason) for s in dup.steps] == [
        ("stop", "duplicate container"),
        ("keep", "unchanged"),
    ]


def test_on_demand_is_never_started_but_kept_when_running() -> None:
    od = spec("od", 5, on_demand=True)
    assert actions(compute_plan("p", [], {}, {"od": od})) == {}
    assert actions(compute_plan("p", [container(od)], {}, {"od": od})) == {"od": "keep"}


def test_active_profile_follows_the_running_set_not_only_labels() -> None:
    shared, only_b = spec("shared", 1), spec("only-b", 2)
    # `shared` was created by profile a and kept when switching to b.
    running = [
        container(shared, profile="a", created="1"),
        container(only_b, profile="b", created="2"),
    ]
    hashes = {
        "a": ({"shared": shared.spec_hash(), "only-a": "x"}, {}),
        "b": ({"shared": shared.spec_hash(), "only-b": only_b.spec_hash()}, {}),
    }
    assert infer_active_profile(running, hashes) == "b"
    # Switching b → a' where a' == {shared}: only the kept container remains, labelled "a".
    kept_only = [container(shared, profile="a")]
    hashes2 = {
        "a": ({"shared": shared.spec_hash(), "x": "y"}, {}),
        "c": ({"shared": shared.spec_hash()}, {}),
    }
    assert infer_active_profile(kept_only, hashes2) == "c"
    assert infer_active_profile([], hashes) is None


def test_a_set_aside_container_is_never_part_of_a_plan() -> None:
    """A killed switch leaves `aither-a-aside-TXN` behind: only recovery may touch it (before,
    the plan deleted it as a "duplicate container", losing the rollback)."""
    a = spec("a", 1)
    aside = ManagedContainer.from_labels(
        id="id-old",
        name="aither-a-aside-0123456789",
        state="exited",
        image=a.image,
        labels=a.labels("default", "p"),
        created_at="0",
    )
    plan = compute_plan("p", [aside, container(a, created="2")], {"a": a})
    assert [(s.action.value, s.current.id if s.current else None) for s in plan.steps] == [
        ("keep", "id-a-2")
    ]
    assert compute_plan("p", [aside], {"a": a}).of(Action.STOP) == ()
