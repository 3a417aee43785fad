"""The end of an upstream stream is its own `data: [DONE]` event, however the bytes arrive."""

from __future__ import annotations

import pytest

from aitherctl.serve.dispatcher import _SseSplitter

TEXT = b'data: {"choices": [{"delta": {"content": "say data: [DONE] now"}}]}\n\n'


@pytest.mark.parametrize("size", [1, 3, 7, 16, 1000])
def test_the_done_event_is_seen_whatever_the_chunk_boundaries(size: int) -> None:
    stream = TEXT + b"data: [DONE]\n\n"
    splitter = _SseSplitter(strip_usage=False)
    for start in range(0, len(stream), size):
        splitter.watch_done(stream[start : start + size])
    assert splitter.done


@pytest.mark.parametrize("size", [1, 5, 1000])
def test_done_in_the_models_text_is_not_the_end(size: int) -> None:
    splitter = _SseSplitter(strip_usage=False)
    for start in range(0, len(TEXT), size):
        splitter.watch_done(TEXT[start : start + size])
    assert not splitter.done


def test_a_stream_that_begins_with_done_and_crlf_lines() -> None:
    first = _SseSplitter(strip_usage=False)
    first.watch_done(b"data: [DONE]\n\n")
    assert first.done
    crlf = _SseSplitter(strip_usage=False)
    crlf.watch_done(b'data: {"x": 1}\r\n\r\ndata:[DONE]\r\n\r\n')
    assert crlf.done
