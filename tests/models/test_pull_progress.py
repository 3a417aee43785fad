"""Every line `pull` can print, as a log line and on a terminal of 80 and 200 columns (where the
live line is rewritten in place and must never wrap)."""

from __future__ import annotations

import pytest

from aitherctl.models.pull_model import (
    PullEvent,
    PullPhase,
    RateMeter,
    progress_line,
    vllm_files,
)

MIB = 1024**2
FILE = "model-00002-of-00004.safetensors"
EVENTS = {
    PullPhase.PRESENT: PullEvent(PullPhase.PRESENT, "orchestrator", note="/hf/hub/models--a--b"),
    PullPhase.START: PullEvent(PullPhase.START, "orchestrator", FILE, 0, 4_900 * MIB),
    PullPhase.PROGRESS: PullEvent(
        PullPhase.PROGRESS, "orchestrator", FILE, 1_200 * MIB, 4_900 * MIB, 25.0 * MIB, 148.0
    ),
    PullPhase.RETRY: PullEvent(
        PullPhase.RETRY,
        "orchestrator",
        FILE,
        1_200 * MIB,
        4_900 * MIB,
        note="the transfer broke after 1,258,291,200 bytes (ReadTimeout)",
    ),
    PullPhase.DONE: PullEvent(
        PullPhase.DONE, "orchestrator", FILE, 4_900 * MIB, 4_900 * MIB, 25.0 * MIB
    ),
    PullPhase.COPY: PullEvent(
        PullPhase.COPY, "orchestrator", FILE, 1_200 * MIB, 4_900 * MIB, 25.0 * MIB, 148.0,
        host="gpu-box",
    ),
    PullPhase.COPIED: PullEvent(
        PullPhase.COPIED, "orchestrator", FILE, 4_900 * MIB, 4_900 * MIB, 25.0 * MIB,
        host="gpu-box",
    ),
}  # fmt: skip
COPY_STARTS = PullEvent(PullPhase.COPY, "orchestrator", FILE, 0, 4_900 * MIB, host="gpu-box")
ON_HOST = PullEvent(
    PullPhase.PRESENT, "orchestrator", note="aither-hf-cache:/hub/models--a--b", host="gpu-box"
)
RESUMED = PullEvent(
    PullPhase.START, "orchestrator", FILE, 0, 4_900 * MIB, resumed_from_bytes=1_200 * MIB
)


def test_every_phase_as_a_log_line() -> None:
    assert {phase: progress_line(event) for phase, event in EVENTS.items()} == {
        PullPhase.PRESENT: "orchestrator: already downloaded (/hf/hub/models--a--b)",
        PullPhase.START: f"orchestrator  {FILE}  4.8 GiB",
        PullPhase.PROGRESS: f"orchestrator  {FILE}  1.2 GiB / 4.8 GiB  25 MiB/s  ETA 2m28s",
        PullPhase.RETRY: f"orchestrator  {FILE}  the transfer broke after 1,258,291,200 bytes "
        "(ReadTimeout); continuing from 1.2 GiB",
        PullPhase.DONE: f"orchestrator  {FILE}  4.8 GiB done  25 MiB/s",
        PullPhase.COPY: f"orchestrator  {FILE}  1.2 GiB / 4.8 GiB to host 'gpu-box'  25 MiB/s  "
        "ETA 2m28s",
        PullPhase.COPIED: f"orchestrator  {FILE}  4.8 GiB copied to host 'gpu-box'  25 MiB/s",
    }
    assert set(EVENTS) == set(PullPhase)
    assert progress_line(RESUMED) == f"orchestrator  {FILE}  4.8 GiB, continuing from 1.2 GiB"
    assert progress_line(COPY_STARTS) == f"orchestrator  {FILE}  4.8 GiB, copying to host 'gpu-box'"
    assert progress_line(ON_HOST) == (
        "orchestrator: already on host 'gpu-box' (aither-hf-cache:/hub/models--a--b)"
    )


LONG = PullEvent(
    PullPhase.PROGRESS, "reasoning",
    "deepseek-r1-distill-qwen-14b-awq/model-00002-of-00004.safetensors",
    1_200 * MIB, 4_900 * MIB, 25.0 * MIB, 148.0,
)  # fmt: skip


@pytest.mark.parametrize("width", [80, 200])
def test_the_live_line_never_wraps_and_keeps_its_numbers(width: int) -> None:
    """On a terminal the progress line is rewritten in place: a copy's host gives way first
    (the copy's first line named it), then the file name, keeping its end. The other lines are
    printed whole, once."""
    expected = {
        80: [
            "orchestrator  …002-of-00004.safetensors  1.2 GiB / 4.8 GiB  25 MiB/s  ETA 2m28s",
            "reasoning  …-00002-of-00004.safetensors  1.2 GiB / 4.8 GiB  25 MiB/s  ETA 2m28s",
            "orchestrator  …002-of-00004.safetensors  1.2 GiB / 4.8 GiB  25 MiB/s  ETA 2m28s",
        ],
        200: [
            f"orchestrator  {FILE}  1.2 GiB / 4.8 GiB  25 MiB/s  ETA 2m28s",
            "reasoning  deepseek-r1-distill-qwen-14b-awq/model-00002-of-00004.safetensors  "
            "1.2 GiB / 4.8 GiB  25 MiB/s  ETA 2m28s",
            f"orchestrator  {FILE}  1.2 GiB / 4.8 GiB to host 'gpu-box'  25 MiB/s  ETA 2m28s",
        ],
    }
    lines = [
        progress_line(EVENTS[PullPhase.PROGRESS], width),
        progress_line(LONG, width),
        progress_line(EVENTS[PullPhase.COPY], width),
    ]
    assert lines == expected[width]
    assert all(len(line) < width for line in lines)


def test_the_rate_and_eta_come_from_the_bytes_and_the_clock() -> None:
    meter = RateMeter(start_s=100.0)
    assert meter.rate(100.0) is None
    meter.add(50 * MIB)
    assert meter.rate(102.0) == 25 * MIB
    assert meter.eta(102.0, 100 * MIB) == 4.0
    assert meter.eta(102.0, None) is None


def test_vllm_gets_one_weights_format_and_only_the_shards_its_index_names() -> None:
    """As vLLM's default loader picks them (`*.safetensors`, else `*.bin`, else `*.pt`; the
    index's shards; nothing under `original/`), with every config and tokenizer file."""
    listing = [
        ".gitattributes", "LICENSE", "README.md", "config.json", "generation_config.json",
        "consolidated.safetensors", "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors", "model.safetensors.index.json",
        "original/consolidated.00.pth", "original/params.json", "original/tokenizer.model",
        "pytorch_model.bin", "onnx/model.onnx", "model.gguf", "tokenizer.json",
        "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
    ]  # fmt: skip
    shards = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}
    assert vllm_files(listing, shards) == [
        ".gitattributes", "LICENSE", "README.md", "config.json", "generation_config.json",
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
        "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
        "special_tokens_map.json", "chat_template.jinja",
    ]  # fmt: skip
    old = ["config.json", "pytorch_model.bin", "training_args.bin", "tf_model.h5", "vocab.txt"]
    assert vllm_files(old) == ["config.json", "pytorch_model.bin", "training_args.bin", "vocab.txt"]
    assert vllm_files(["config.json", "model.pt"]) == ["config.json", "model.pt"]
