"""Every state a user can reach renders: each `Action` and each Docker container state, in the
plan table, `--json`, the monitor's plan dialog and `ps`, at 80 and 200 columns.

The lists come from the enum and from Docker's own state names, so a member added later is
rendered here before any user meets it (issue 19: `Action.RESUME` crashed the plan table).
"""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from aitherctl.cli.plan_json import plan_json
from aitherctl.cli.render import plan_table
from aitherctl.cli.service_cmds import ps_table
from aitherctl.docker.stack import ManagedContainer
from aitherctl.engines.registry import build_container
from aitherctl.gpu.vram import VramCheck
from aitherctl.monitor.actions import plan_text
from aitherctl.monitor.services import ServiceListing, ServiceRow
from aitherctl.profiles.profile import Engine, Health, Service
from aitherctl.switching.plan import Action, Plan, Step, compute_plan

# Docker's container states (`docker inspect` → State.Status).
DOCKER_STATES = ("created", "running", "paused", "restarting", "removing", "exited", "dead")
WIDTHS = (80, 200)


def _spec(name: str, port: int):  # type: ignore[no-untyped-def]
    service = Service(
        name=name, engine=Engine.LLAMACPP, image="img", port=port, model="/m.gguf", health=Health()
    )
    return build_container(service, {})


def _container(name: str, state: str, port: int) -> ManagedContainer:
    target = _spec(name, port)
    return ManagedContainer.from_labels(
        id=f"id-{name}",
        name=f"aither-{name}",
        state=state,
        image=target.image,
        labels=target.labels("default", "p"),
    )


def _every_step() -> Plan:
    """One step per (action, container state), with and without a target or a container."""
    steps = []
    port = 9000
    for action in Action:
        for state in DOCKER_STATES:
            port += 1
            name = f"{action.value}-{state}"
            steps.append(
                Step(
                    action,
                    name,
                    f"{state} container",
                    _container(name, state, port),
                    _spec(name, port),
                )
            )
        steps.append(Step(action, f"{action.value}-bare", "no container", None, _spec("b", 1)))
        steps.append(
            Step(
                action,
                f"{action.value}-gone",
                "no target",
                _container(f"{action.value}-gone", "exited", 2),
                None,
            )
        )
    return Plan("everything", tuple(steps))


def _render(renderable: object, width: int) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None, force_terminal=False).print(renderable)
    return buffer.getvalue()


@pytest.mark.parametrize("width", WIDTHS)
def test_plan_table_renders_every_action_and_state(width: int) -> None:
    plan = _every_step()
    text = _render(plan_table(plan), width)
    for action in Action:
        assert action.value in text
    hosts = ["local" if index % 2 else "node-a" for index in range(len(plan.steps))]
    assert "node-a" in _render(plan_table(plan, hosts), width)


def test_plan_json_names_every_action() -> None:
    plan = _every_step()
    document = json.loads(json.dumps(plan_json(plan)))
    assert {step["action"] for step in document["steps"]} == {a.value for a in Action}
    assert len(document["steps"]) == len(plan.steps)


def test_monitor_plan_dialog_names_every_action() -> None:
    text = plan_text("everything", _every_step(), VramCheck(()))
    for action in Action:
        assert f"  {action.value:<9} {action.value}-exited: exited container" in text


@pytest.mark.parametrize("width", WIDTHS)
def test_ps_renders_every_container_state(width: int) -> None:
    rows = tuple(
        ServiceRow(
            service=f"svc-{state}",
            profile="p",
            engine="llamacpp",
            model="/m.gguf",
            state=state,
            health="none",
            port=9000 + index,
            bind="127.0.0.1",
            gpus=(),
            vram_budget_bytes=None,
            vram_used_bytes=None,
            container=f"aither-{state}",
            container_id=f"id{index}",
            image="img",
            uptime_s=None,
        )
        for index, state in enumerate(DOCKER_STATES)
    )
    listing = ServiceListing("p", "default", "unix:///x", rows, pending_switch=False)
    text = _render(ps_table(listing), width)
    for state in DOCKER_STATES:
        assert state in text
    several = ServiceListing("p", "default", "unix:///x", rows, False, hosts=(("b", "ssh://b"),))
    assert _render(ps_table(several), width).count("local") == len(DOCKER_STATES)


@pytest.mark.parametrize("width", WIDTHS)
def test_a_stopped_container_is_planned_as_resume_and_rendered(width: int) -> None:
    """The state after a reboot: the profile's container exists, stopped, its spec unchanged."""
    target = _spec("chat", 8080)
    stopped = _container("chat", "exited", 8080)
    plan = compute_plan("p", [stopped], {"chat": target})
    assert [(s.action, s.reason) for s in plan.steps] == [(Action.RESUME, "unchanged, exited")]
    table = _render(plan_table(plan), width)
    assert table.splitlines()[2].split() == [
        "resume",
        "chat",
        "llamacpp",
        "8080",
        "cpu",
        "-",
        "unchanged,",
        "exited",
    ]


@pytest.mark.parametrize("width", WIDTHS)
def test_an_empty_plan_says_so(width: int) -> None:
    """A profile with no services (endpoints only, or a new file) and nothing of it running: the
    table says there is nothing to do instead of showing its headers alone."""
    text = _render(plan_table(Plan("empty", ())), width)
    assert text.splitlines()[0].rstrip() == "plan → empty"
    assert text.splitlines()[-1].rstrip() == "nothing to start, keep or stop"
    assert "nothing to start" not in _render(plan_table(_every_step()), width)
