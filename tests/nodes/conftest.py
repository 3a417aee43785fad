"""The Vast.ai contract double, served on loopback for the adapter and the CLI."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from aitherctl.nodes.vast import VastProvider
from tests.doubles.vast_api import VastState, standard_offers

__all__ = ["standard_offers"]


@pytest.fixture
def vast(vast_url: str, vast_state: VastState) -> Iterator[VastProvider]:
    with httpx.Client(timeout=10) as client:
        yield VastProvider(client, vast_url, vast_state.api_key)
