"""A backend's states and the only changes between them (pure).

Every change of state goes through `Scheduler.set_state(backend, expected, new)`, which checks
the state it expects and this table (llama-swap's `isValidTransition` and
`swapState(expected, new)`): a decision taken from a state that changed meanwhile fails loudly
instead of silently undoing what another task did.

    stopped ──▶ loading ──▶ ready ──▶ evicting ──▶ stopped | asleep | unloaded
       ▲          │            │          │
       │          └─(failed)─▶ back to where the load began
       └── asleep / unloaded / ready whose container is gone (observed)

A stopped backend whose container runs again (someone ran `aitherctl up`) becomes ready.
"""

from __future__ import annotations

from enum import StrEnum

from aitherctl.errors import AitherError


class BackendState(StrEnum):
    READY = "ready"
    LOADING = "loading"
    EVICTING = "evicting"
    STOPPED = "stopped"  # no running container
    ASLEEP = "asleep"  # vLLM sleep mode: the container runs, its GPU memory is free
    UNLOADED = "unloaded"  # Ollama / ComfyUI released their models; the next request loads


HOLDING = (BackendState.READY, BackendState.LOADING, BackendState.EVICTING)
# Put away: a request must load it first.
AWAY = (BackendState.STOPPED, BackendState.ASLEEP, BackendState.UNLOADED)

_S = BackendState
TRANSITIONS: dict[BackendState, frozenset[BackendState]] = {
    # found running again (a hand-run `up`); a request or a restore loads it
    _S.STOPPED: frozenset({_S.READY, _S.LOADING}),
    # woken or reloaded by a load; its container died or was removed (observed)
    _S.ASLEEP: frozenset({_S.LOADING, _S.STOPPED}),
    _S.UNLOADED: frozenset({_S.LOADING, _S.STOPPED}),
    # loaded; or a failed or cancelled load goes back to where it began
    _S.LOADING: frozenset({_S.READY, _S.STOPPED, _S.ASLEEP, _S.UNLOADED}),
    # put away; its container is gone (observed)
    _S.READY: frozenset({_S.EVICTING, _S.STOPPED}),
    # put away the engine's way; or left ready (busy after all, or the eviction failed)
    _S.EVICTING: frozenset({_S.STOPPED, _S.ASLEEP, _S.UNLOADED, _S.READY}),
}


def is_valid_transition(old: BackendState, new: BackendState) -> bool:
    return new in TRANSITIONS[old]


class InvalidTransition(AitherError):
    """A state change from a state the backend is not in, or one the table does not allow: a bug
    in the scheduler, reported instead of applied."""
