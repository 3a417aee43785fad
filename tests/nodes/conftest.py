"""The Vast.ai contract double, served on loopback for the adapter and the CLI."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from aitherctl.nodes.vast import VastProvider
from tests.doubles.vast_api import VastOffer, VastState, serve_vast


def standard_offers() -> dict[int, VastOffer]:
    """Three asks, as the articles price them: a 3090 at about $0.15/h, a 4090 at $0.20/h."""
    return {
        101: VastOffer(101, "RTX 3090", dph_base=0.15, gpu_ram_mb=24_576),
        102: VastOffer(102, "RTX 3090", dph_base=0.22, gpu_ram_mb=24_576),
        201: VastOffer(201, "RTX 4090", dph_base=0.20, gpu_ram_mb=24_564),
    }


@pytest.fixture
def vast_state() -> VastState:
    return VastState(offers=standard_offers(), boot_delay_s=0.0)


@pytest.fixture
def vast_url(vast_state: VastState, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with serve_vast(vast_state) as url:
        monkeypatch.setenv("VAST_URL", url)
        monkeypatch.setenv("VAST_API_KEY", vast_state.api_key)
        yield url


@pytest.fixture
def vast(vast_url: str, vast_state: VastState) -> Iterator[VastProvider]:
    with httpx.Client(timeout=10) as client:
        yield VastProvider(client, vast_url, vast_state.api_key)
