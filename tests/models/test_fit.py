"""The fit estimate's arithmetic on published model shapes (their config.json figures and the
`metadata.total_size` of their safetensors index, as published on their model pages), and on
GGUF headers of the same shapes."""

from __future__ import annotations

import pytest

from aitherctl.models.fit import (
    LLAMACPP_OVERHEAD_BYTES,
    VLLM_OVERHEAD_BYTES,
    EstimateError,
    FitVerdict,
    estimate_fit,
    judge_fit,
)
from aitherctl.models.gguf import parse_gguf_header
from aitherctl.models.shape import SafetensorsTensors, shape_from_gguf, shape_from_hf
from aitherctl.units import GIB, MIB
from tests.models.gguf_writer import gguf_header

# Published config.json values (layers, heads, KV heads, hidden size, max positions, dtype) and
# the index's metadata.total_size (bytes of the bf16 weights).
LLAMA_31_8B = {
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "hidden_size": 4096,
    "max_position_embeddings": 131072,
    "torch_dtype": "bfloat16",
}
LLAMA_31_8B_BYTES = 16_060_522_496
QWEN25_14B = {
    "num_hidden_layers": 48,
    "num_attention_heads": 40,
    "num_key_value_heads": 8,
    "hidden_size": 5120,
    "max_position_embeddings": 131072,
    "torch_dtype": "bfloat16",
}
QWEN25_14B_BYTES = 29_540_067_328
MISTRAL_7B = {
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "hidden_size": 4096,
    "max_position_embeddings": 32768,
    "torch_dtype": "bfloat16",
}
MISTRAL_7B_BYTES = 14_483_464_192


def hf(config: dict[str, object], total: int):  # type: ignore[no-untyped-def]
    return shape_from_hf(config, SafetensorsTensors(total, None), "model")


def test_llama_31_8b_on_vllm_at_8k() -> None:
    estimate = estimate_fit("vllm", hf(LLAMA_31_8B, LLAMA_31_8B_BYTES), ["--max-model-len", "8192"])
    # KV per token: 2 (K, V) x 32 layers x 8 KV heads x 128 (4096 / 32) x 2 bytes = 128 KiB
    assert estimate.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2 == 131_072
    assert estimate.kv_bytes == 8192 * 131_072 == 1 * GIB
    assert estimate.weights_bytes == LLAMA_31_8B_BYTES
    assert estimate.needed_bytes == LLAMA_31_8B_BYTES + 1 * GIB + VLLM_OVERHEAD_BYTES
    assert estimate.describe() == (
        "weights 15.0 GiB (bfloat16, exact from the files) + KV 1.0 GiB at 8,192 tokens "
        "x 1 (bfloat16) + overhead about 2.0 GiB"
    )


def test_vllm_default_context_is_max_position_embeddings() -> None:
    estimate = estimate_fit("vllm", hf(MISTRAL_7B, MISTRAL_7B_BYTES), [])
    assert estimate.kv_tokens == 32768
    assert estimate.kv_bytes == 32768 * 131_072 == 4 * GIB


def test_qwen25_14b_fp8_kv_and_tensor_parallel() -> None:
    shape = hf(QWEN25_14B, QWEN25_14B_BYTES)
    estimate = estimate_fit("vllm", shape, ["--max-model-len", "32768", "--kv-cache-dtype", "fp8"])
    # 2 x 48 x 8 x 128 x 1 byte = 96 KiB a token
    assert estimate.kv_bytes == 32768 * 2 * 48 * 8 * 128 == 3 * GIB
    split = estimate_fit("vllm", shape, ["--max-model-len", "32768"], gpus=2)
    assert split.kv_bytes == 6 * GIB
    assert split.needed_per_gpu_bytes == (QWEN25_14B_BYTES + 6 * GIB) // 2 + VLLM_OVERHEAD_BYTES


def test_vllm_dtype_flag_and_float32_downcast() -> None:
    as_float32 = {**MISTRAL_7B, "torch_dtype": "float32"}
    shape = hf(as_float32, MISTRAL_7B_BYTES * 2)
    assert estimate_fit("vllm", shape, []).weights_bytes == MISTRAL_7B_BYTES  # auto: 16 bits
    assert estimate_fit("vllm", shape, ["--dtype", "float32"]).weights_bytes == MISTRAL_7B_BYTES * 2


def test_budgets_judged() -> None:
    estimate = estimate_fit("vllm", hf(LLAMA_31_8B, LLAMA_31_8B_BYTES), ["--max-model-len", "8192"])
    assert judge_fit("chat", estimate, 24 * GIB).verdict is FitVerdict.FITS
    too_small = judge_fit("chat", estimate, 12 * GIB)
    assert too_small.verdict is FitVerdict.TOO_SMALL
    assert too_small.summary() == "needs about 18.0 GiB, budget 12.0 GiB: cannot hold the weights"
    # 17.5 GiB holds the weights (14.96 GiB) but not 1 GiB of KV plus 2 GiB overhead.
    short = judge_fit("chat", estimate, 17 * GIB + 512 * MIB)
    assert short.verdict is FitVerdict.SHORT_CONTEXT
    room = 17 * GIB + 512 * MIB - VLLM_OVERHEAD_BYTES - LLAMA_31_8B_BYTES
    assert short.fitting_tokens == room // 131_072 // 16 * 16 == 4432
    assert short.summary() == (
        "needs about 18.0 GiB, budget 17.5 GiB: the KV cache at 8,192 tokens does not fit; "
        "4,432 would"
    )
    assert judge_fit("chat", estimate, None).summary() == "needs about 18.0 GiB, no GPU budget"


Q4_K, Q6_K, F32 = 12, 14, 0


def llama_8b_gguf(context: int = 131072) -> bytes:
    metadata = {
        "general.architecture": "llama",
        "llama.block_count": 32,
        "llama.attention.head_count": 32,
        "llama.attention.head_count_kv": 8,
        "llama.embedding_length": 4096,
        "llama.context_length": context,
    }
    tensors = [("token_embd.weight", (4096, 128256), Q4_K), ("output.weight", (4096, 128256), Q6_K)]
    tensors += [(f"blk.{i}.attn_norm.weight", (4096,), F32) for i in range(32)]
    return gguf_header(metadata, tensors)


def test_gguf_weights_are_the_tensors_bytes_at_their_quantisation() -> None:
    data = llama_8b_gguf()
    header = parse_gguf_header(iter_reader(data), "llama.gguf")
    shape = shape_from_gguf(header, "llama.gguf")
    elements = 4096 * 128256
    # Q4_K: 144 bytes per 256 elements; Q6_K: 210; F32: 4 bytes each
    assert shape.weights_bytes == elements // 256 * 144 + elements // 256 * 210 + 32 * 4096 * 4
    assert shape.weights_dtype == "Q6_K"  # the type holding the most bytes
    assert (shape.layers, shape.kv_heads, shape.key_length, shape.context_length) == (
        32, 8, 128, 131072,
    )  # fmt: skip


def test_llamacpp_kv_is_ctx_size_shared_by_slots() -> None:
    shape = shape_from_gguf(parse_gguf_header(iter_reader(llama_8b_gguf()), "m"), "m")
    estimate = estimate_fit("llamacpp", shape, ["-c", "8192", "--parallel", "2"])
    assert estimate.kv_bytes == 8192 * 2 * 32 * 8 * 128 * 2 == 1 * GIB  # f16 K and V
    assert estimate.kv_sequences == 2
    assert estimate.overhead_bytes == LLAMACPP_OVERHEAD_BYTES
    quantised = estimate_fit("llamacpp", shape, ["-c", "8192", "-ctk", "q8_0", "-ctv", "q8_0"])
    assert quantised.kv_bytes == 8192 * 32 * 8 * 128 * 2 * 34 // 32 == 544 * MIB
    # --ctx-size 0 or none: the model's context_length; padded up to 256 cells
    full = estimate_fit("llamacpp", shape, [])
    assert full.kv_tokens == 131072
    assert full.describe().endswith(
        "; the model's full context: llama.cpp's --fit may shrink it to the GPU's free memory"
    )
    assert not estimate_fit("llamacpp", shape, ["--fit", "off"]).kv_note
    assert estimate_fit("llamacpp", shape, ["--ctx-size=1000"]).kv_tokens == 1024
    with pytest.raises(EstimateError, match="cache type 'q3_x'"):
        estimate_fit("llamacpp", shape, ["-ctk", "q3_x"])


def iter_reader(data: bytes):  # type: ignore[no-untyped-def]
    position = 0

    def read(size: int) -> bytes:
        nonlocal position
        chunk = data[position : position + size]
        position += size
        return chunk

    return read


def test_short_context_warnings_name_the_engine_flag() -> None:
    from aitherctl.models.check import short_context_warnings

    estimate = estimate_fit("vllm", hf(LLAMA_31_8B, LLAMA_31_8B_BYTES), ["--max-model-len", "8192"])
    short = judge_fit("chat", estimate, 17 * GIB + 512 * MIB)
    assert short_context_warnings([short]) == [
        "service 'chat': its budget of 17.5 GiB holds the weights but not the KV cache at 8,192 "
        "tokens; --max-model-len 4432 would fit"
    ]
    # 15.5 GiB: the weights (14.96 GiB) fit, but not even the overhead beside them
    none = judge_fit("chat", estimate, 15 * GIB + 512 * MIB)
    assert none.fitting_tokens == 0
    assert none.summary().endswith("the KV cache at 8,192 tokens does not fit; none would")
    assert short_context_warnings([none]) == [
        "service 'chat': its budget of 15.5 GiB holds the weights but not the KV cache at 8,192 "
        "tokens; no context fits beside the engine's overhead (about 2.0 GiB)"
    ]


def test_vllm_on_a_gguf_file_keeps_its_quantised_weights() -> None:
    shape = shape_from_gguf(parse_gguf_header(iter_reader(llama_8b_gguf()), "m"), "m")
    estimate = estimate_fit("vllm", shape, ["--max-model-len", "8192"])
    assert estimate.weights_bytes == shape.weights_bytes
    assert (estimate.kv_dtype, estimate.kv_bytes) == ("bfloat16", 1 * GIB)


# SmolLM2-135M (the model the real vLLM CPU server runs in tests/models/test_fit_real.py):
# 2 x 30 layers x 3 KV heads x 64 x 2 bytes = 23,040 bytes a token.
SMOLLM2_135M = {
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "hidden_size": 576,
    "max_position_embeddings": 8192,
    "torch_dtype": "bfloat16",
}
SMOLLM2_135M_BYTES = 269_060_352


def test_vllm_on_the_cpu_holds_the_kv_cache_its_environment_sets() -> None:
    """vLLM on the CPU allocates VLLM_CPU_KVCACHE_SPACE GiB of KV cache whatever the context
    (it overrides --kv-cache-memory-bytes there): the estimate is that, in vLLM's 16-token
    blocks, not one --max-model-len sequence."""
    shape = hf(SMOLLM2_135M, SMOLLM2_135M_BYTES)
    args = ["--max-model-len", "2048", "--kv-cache-memory-bytes", "64M"]
    env = (("VLLM_CPU_KVCACHE_SPACE", "1"),)
    estimate = estimate_fit("vllm", shape, args, on_cpu=True, env=env)
    assert estimate.kv_bytes == GIB
    assert estimate.kv_tokens == GIB // (23_040 * 16) * 16 == 46_592
    assert estimate.describe().endswith(
        "KV 1.0 GiB at 46,592 tokens x 1 (bfloat16) + overhead about 2.0 GiB; "
        "a fixed KV cache (VLLM_CPU_KVCACHE_SPACE=1)"
    )
    # On a GPU the variable is not read: the flag sets the size, per GPU.
    on_gpu = estimate_fit("vllm", shape, args, gpus=2, env=env)
    assert on_gpu.kv_bytes == 2 * 64 * MIB
    assert on_gpu.needed_per_gpu_bytes == -(-(SMOLLM2_135M_BYTES + 128 * MIB) // 2) + 2 * GIB


@pytest.mark.parametrize(
    ("flag", "size"),
    [("2G", 2 * GIB), ("2g", 2 * 10**9), ("1.5g", 1_500_000_000), ("1048576", MIB)],
)
def test_kv_cache_memory_bytes_is_read_as_vllm_reads_it(flag: str, size: int) -> None:
    shape = hf(SMOLLM2_135M, SMOLLM2_135M_BYTES)
    estimate = estimate_fit("vllm", shape, ["--kv-cache-memory-bytes", flag], on_cpu=True)
    assert estimate.kv_bytes == size


def test_a_kv_cache_below_one_sequence_is_said_to_stop_vllm_and_an_unread_size_is_unknown() -> None:
    shape = hf(SMOLLM2_135M, SMOLLM2_135M_BYTES)
    small = estimate_fit(
        "vllm", shape, ["--max-model-len", "8192", "--kv-cache-memory-bytes", "64M"]
    )
    assert small.kv_tokens == 64 * MIB // 23_040 // 16 * 16 == 2912
    assert small.kv_note == (
        "a fixed KV cache (--kv-cache-memory-bytes 64M), less than one 8,192-token sequence: "
        "vLLM refuses to start"
    )
    with pytest.raises(EstimateError, match="is not a whole number of GiB"):
        estimate_fit("vllm", shape, [], on_cpu=True, env=(("VLLM_CPU_KVCACHE_SPACE", "1.5"),))
    with pytest.raises(EstimateError, match="is not a size vLLM reads"):
        estimate_fit("vllm", shape, ["--kv-cache-memory-bytes", "1.5G"])


def test_vllm_on_the_cpu_without_a_set_kv_cache_says_what_it_reserves() -> None:
    shape = hf(SMOLLM2_135M, SMOLLM2_135M_BYTES)
    estimate = estimate_fit("vllm", shape, ["--max-model-len", "2048"], on_cpu=True)
    assert estimate.kv_bytes == 2048 * 23_040
    assert estimate.kv_note == (
        "vLLM on the CPU reserves 0.9 of this machine's memory unless VLLM_CPU_KVCACHE_SPACE "
        "or --kv-cache-memory-bytes sets its KV cache"
    )
    assert estimate_fit("vllm", shape, ["--max-model-len", "2048"]).kv_note == ""  # a GPU's
