"""The Vast.ai contract double, served on loopback for the adapter and the CLI."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from aitherctl.nodes.vast import VastProvider
from tests.doubles.vast_api import VastState, standard_offers

__all__ = ["NODE_PROFILE", "standard_offers"]

# One node on the Vast double, as a profile the unit and CLI tests load.
NODE_PROFILE = """
services: {}
nodes:
  reasoning:
    provider: vast
    gpu: RTX 3090
    vram: 24GiB
    max_price_per_hour: 0.20
    engine: llamacpp
    image: aither-test/llamacpp:latest
    model: /models/smol.gguf
    port: 8080
"""


@pytest.fixture
def vast(vast_url: str, vast_state: VastState) -> Iterator[VastProvider]:
    with httpx.Client(timeout=10) as client:
        yield VastProvider(client, vast_url, vast_state.api_key)
