"""The SmolLM2 files the tests already have (scripts/test-env.sh), read for real, and the ways a
service's model is found on this machine (a bind mount, the Hugging Face cache layout) or not."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import pytest

from aitherctl.models.files import ModelNotHere, read_gguf, read_hf_folder, read_model_shape
from aitherctl.models.gguf import MetadataError
from aitherctl.profiles.profile import Engine, Service, Volume
from tests.conftest import MODEL_FILE, MODELS_DIR, _unavailable

GGUF = Path(MODELS_DIR) / MODEL_FILE
HF = Path(os.environ.get("AITHER_TEST_VLLM_MODEL", f"{MODELS_DIR}/smollm2-hf"))


@pytest.fixture
def gguf() -> Path:
    if not GGUF.is_file():
        _unavailable(f"{GGUF} (scripts/test-env.sh)")
    return GGUF


@pytest.fixture
def hf_folder() -> Path:
    if not (HF / "config.json").is_file():
        _unavailable(f"{HF} (scripts/test-env.sh)")
    return HF


def test_smollm2_gguf(gguf: Path) -> None:
    shape = read_gguf(gguf)
    # SmolLM2-135M (its config.json): 30 layers, 9 heads, 3 KV heads, hidden 576, 8192 positions
    assert (shape.layers, shape.kv_heads, shape.key_length, shape.value_length) == (30, 3, 64, 64)
    assert shape.context_length == 8192
    assert shape.weights_dtype == "Q4_1"
    assert shape.parameters == 134_515_008
    # The data section is the file after the header: the tensors' bytes fill it but for the
    # alignment padding (under 32 bytes a tensor) and the header (the vocabulary, a few MB).
    assert 0 < gguf.stat().st_size - shape.weights_bytes < 4 * 1024 * 1024


def test_smollm2_hf_folder(hf_folder: Path) -> None:
    shape = read_hf_folder(hf_folder)
    assert (shape.layers, shape.kv_heads, shape.key_length, shape.context_length) == (
        30, 3, 64, 8192,
    )  # fmt: skip
    assert shape.parameters == 134_515_008  # the same model as the GGUF
    # The weights are the file after its 8-byte length and JSON header.
    path = hf_folder / "model.safetensors"
    with path.open("rb") as handle:
        (header_size,) = struct.unpack("<Q", handle.read(8))
    assert shape.weights_bytes == path.stat().st_size - 8 - header_size
    assert shape.weights_dtype == json.loads((hf_folder / "config.json").read_text())["dtype"]


def service(engine: Engine, model: str, *volumes: Volume) -> Service:
    return Service("m", engine, "img", 8000, model=model, volumes=volumes)


def test_model_found_through_a_bind_mount(gguf: Path) -> None:
    svc = service(Engine.LLAMACPP, f"/models/{gguf.name}", Volume(str(gguf.parent), "/models"))
    assert read_model_shape(svc).source == str(gguf)


def test_hf_id_found_in_a_mounted_cache(tmp_path: Path, hf_folder: Path) -> None:
    repo = tmp_path / "hub" / "models--HuggingFaceTB--SmolLM2-135M-Instruct"
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    for name in ("config.json", "model.safetensors"):
        (snapshot / name).symlink_to(hf_folder / name)  # as huggingface_hub links to blobs/
    svc = service(
        Engine.VLLM,
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        Volume(str(tmp_path), "/root/.cache/huggingface"),
    )
    assert read_model_shape(svc).source == str(snapshot)


def test_index_alone_gives_the_size_before_the_shards_are_there(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "hidden_size": 64,
                "torch_dtype": "bfloat16",
            }
        )
    )
    index = {
        "metadata": {"total_size": 123_456},
        "weight_map": {"a": "model-00001-of-00002.safetensors"},
    }
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    shape = read_hf_folder(tmp_path)
    assert (shape.weights_bytes, shape.parameters) == (123_456, 61_728)


def test_models_that_cannot_be_read_here() -> None:
    with pytest.raises(
        ModelNotHere, match="in Docker volume 'aither-hf-cache', not read from here"
    ):
        read_model_shape(service(Engine.VLLM, "Qwen/Qwen2.5-14B"))
    with pytest.raises(ModelNotHere, match="in Docker volume 'models', not read from here"):
        read_model_shape(service(Engine.LLAMACPP, "/models/x.gguf", Volume("models", "/models")))


def test_a_cut_short_or_wrong_file_says_which(tmp_path: Path, gguf: Path) -> None:
    short = tmp_path / "short.gguf"
    with gguf.open("rb") as handle:
        short.write_bytes(handle.read(1000))
    with pytest.raises(MetadataError, match=r"short.gguf: GGUF header is cut short"):
        read_gguf(short)
    wrong = tmp_path / "wrong.gguf"
    shutil.copy(HF / "config.json", wrong)
    with pytest.raises(MetadataError, match=r"wrong.gguf: not a GGUF file"):
        read_gguf(wrong)


def test_a_split_gguf_counts_every_file_and_waits_for_the_missing_ones(tmp_path: Path) -> None:
    from tests.models.gguf_writer import gguf_header

    arch = {
        "general.architecture": "llama", "llama.block_count": 2, "llama.attention.head_count": 4,
        "llama.embedding_length": 64, "split.count": 2,
    }  # fmt: skip
    first = tmp_path / "m-00001-of-00002.gguf"
    first.write_bytes(gguf_header(arch, [("a", (64, 64), 0)]))  # F32: 16,384 bytes
    with pytest.raises(ModelNotHere, match=r"no m-00002-of-00002\.gguf yet"):
        read_gguf(first)
    (tmp_path / "m-00002-of-00002.gguf").write_bytes(
        gguf_header({"split.count": 2}, [("b", (64, 128), 1)])  # F16: 16,384 bytes
    )
    assert read_gguf(first).weights_bytes == 64 * 64 * 4 + 64 * 128 * 2


def _small_gguf(path: Path, context: int) -> None:
    from tests.models.test_fit import llama_8b_gguf

    path.write_bytes(llama_8b_gguf(context))


def test_a_gguf_read_once_is_not_walked_again_until_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A switch reads each model while planning and again while checking, and every switch
    does: the shape cache (here and in the state folder) answers while the file is unchanged,
    and a file replaced under the same name (a new quantisation downloaded) is read again."""
    from aitherctl.models import files, shape_cache

    model = tmp_path / "m.gguf"
    _small_gguf(model, 8192)
    walked: list[str] = []
    real = files._gguf_header

    def counted(path: Path) -> object:
        walked.append(path.name)
        return real(path)

    monkeypatch.setattr(files, "_gguf_header", counted)
    assert read_gguf(model).context_length == 8192
    assert read_gguf(model).context_length == 8192
    assert walked == ["m.gguf"]
    shape_cache._memory.clear()  # another process: the state folder's copy answers
    assert read_gguf(model).context_length == 8192
    assert walked == ["m.gguf"]
    assert (tmp_path / "state" / "cache" / "model-shapes.json").is_file()

    _small_gguf(model, 4096)  # same name and size, new contents
    os.utime(model, ns=(model.stat().st_atime_ns, model.stat().st_mtime_ns + 1_000_000))
    assert read_gguf(model).context_length == 4096
    assert walked == ["m.gguf", "m.gguf"]


def test_an_unreadable_shape_cache_is_ignored(tmp_path: Path) -> None:
    from aitherctl.models import shape_cache

    cache = tmp_path / "state" / "cache" / "model-shapes.json"
    cache.parent.mkdir(parents=True)
    model = tmp_path / "m.gguf"
    _small_gguf(model, 2048)
    key = str(model.resolve())
    for text in ("{not json", "[]", json.dumps({key: {"files": "x", "shape": {}}})):
        cache.write_text(text)
        shape_cache._memory.clear()
        assert read_gguf(model).context_length == 2048
    assert key in json.loads(cache.read_text())  # rewritten whole
