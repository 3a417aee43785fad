"""Will a service's model fit its memory budget? An upper-bound estimate, before a byte is
downloaded, from the model's own metadata (`shape.py`) and the service's engine flags.

needed = weights + KV cache + engine overhead, each part said with its method:
- weights: the tensors' bytes as stored (exact, from the file), or, for vLLM, the parameter count
  at the dtype vLLM loads them at;
- KV cache: as each engine allocates it (below);
- overhead: a documented constant per engine (the CUDA context and the engine's working
  buffers): the uncertain part, stated as "about".

llama.cpp (`src/llama-context.cpp` `llama_context::llama_context`; `src/llama-kv-cache.cpp`
`llama_kv_cache::llama_kv_cache`): `--ctx-size` (0, the default: the model's `context_length`)
is the *total* number of cells, shared by the `--parallel` slots, padded up to 256
(`GGML_PAD(n_ctx, 256)`); per layer it allocates one K tensor of `n_embd_k_gqa` x cells at
`--cache-type-k` (f16 unless set) and one V tensor likewise at `--cache-type-v`. The whole cache
is allocated at start.

vLLM (`vllm/v1/kv_cache_interface.py` `AttentionSpec.page_size_bytes`: 2 x block_size x
num_kv_heads x head_size x dtype bytes per layer; `vllm/v1/core/kv_cache_utils.py`
`check_enough_kv_cache_memory`): the budget (`--gpu-memory-utilization` x the GPU's total) must
hold the weights, the activation peak and at least one sequence of `--max-model-len` tokens
(default: the model's `max_position_embeddings`), else it refuses to start and says the longest
context that fits. KV at `--kv-cache-dtype` (auto: the model's dtype; fp8 variants 1 byte).
Weights at `--dtype` (auto: the config's dtype, with float32 models downcast to a 16-bit type:
`vllm/config/model.py` `_resolve_auto_dtype`). Tensor parallel splits weights and KV heads
over the GPUs. A KV cache of a set size is allocated whole instead, whatever the budget and
context: `--kv-cache-memory-bytes` (per GPU; `vllm/config/cache.py`, "ignores
gpu_memory_utilization"), and on the CPU the environment's `VLLM_CPU_KVCACHE_SPACE` (GiB), which
overrides that flag (`vllm/platforms/cpu.py` `check_and_update_config`, vLLM 0.32). Without either,
vLLM on the CPU reserves `--gpu-memory-utilization` (0.9) of the machine's memory for its worker
(`vllm/v1/worker/cpu_worker.py`): the estimate cannot bound that, and says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from aitherctl.engines.base import flag_value
from aitherctl.models.shape import DTYPE_BYTES, ModelShape
from aitherctl.units import GIB, format_bytes

# Engine overhead on a GPU, beyond weights and KV cache. Upper-side round figures, not measured
# here (no GPU on the build machines):
# - llama.cpp: the CUDA context (about 0.3-0.5 GiB as NVML counts it) plus the compute buffers
#   it logs as "compute buffer size" (a few hundred MiB, growing with the context and -b/-ub).
LLAMACPP_OVERHEAD_BYTES = 1 * GIB
# On the CPU (a service with `gpu: none`, weighed against its `ram:`): the same compute buffers
# without a CUDA context. Measured here: SmolLM2-135M Q4_1 at -c 2048 holds 176 MiB resident
# (weights 92 MiB mapped from the file, KV 45 MiB, 39 MiB besides).
LLAMACPP_CPU_OVERHEAD_BYTES = GIB // 2
# - vLLM: the CUDA context, the activation peak its profiling run measures at
#   `--max-num-batched-tokens`, and CUDA graphs (none with --enforce-eager): about 1-3 GiB for
#   7-14B models (vLLM's "Memory profiling takes ..." log line gives the real figure).
VLLM_OVERHEAD_BYTES = 2 * GIB
LLAMACPP_CELL_PAD = 256  # GGML_PAD(n_ctx, 256) in llama_context's constructor

# llama.cpp's `--cache-type-k/-v` values (common/arg.cpp `kv_cache_types`): bytes per element,
# from ggml's block sizes.
LLAMACPP_CACHE_TYPES = {
    "f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32, "q4_1": 20 / 32,
    "iq4_nl": 18 / 32, "q5_0": 22 / 32, "q5_1": 24 / 32,
}  # fmt: skip
CTX_FLAGS = ("-c", "--ctx-size")
PARALLEL_FLAGS = ("-np", "--parallel")
LLAMACPP_DEFAULT_SLOTS = 4  # llama-server: `--parallel` auto gives 4 slots over one shared cache
# Without --ctx-size, llama.cpp's `--fit` (on by default: common/common.cpp
# `common_init_result`, common.h `fit_params`, `fit_params_target` 1 GiB, `fit_params_min_ctx`
# 4096) shrinks the context to leave 1 GiB of each device free: the full context is the bound.
FIT_FLAGS = ("-fit", "--fit")
FIT_OFF = ("off", "0", "false", "disabled")
FIT_NOTE = "the model's full context: llama.cpp's --fit may shrink it to the GPU's free memory"


@dataclass(frozen=True, slots=True)
class FitEstimate:
    """The memory a service will need, in bytes, as an upper bound, with how each part was got."""

    engine: str
    weights_bytes: int
    weights_method: str  # "Q4_1, exact from the file"
    kv_bytes: int
    kv_tokens: int  # cells (llama.cpp) or max-model-len (vLLM)
    kv_sequences: int  # slots sharing the cells (llama.cpp) or sequences required (vLLM: 1)
    kv_bytes_per_token: float
    kv_dtype: str
    overhead_bytes: int
    gpus: int = 1  # tensor-parallel ranks the weights and KV are split over
    kv_note: str = ""  # how the engine may change the context it was given

    @property
    def needed_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.overhead_bytes

    @property
    def needed_per_gpu_bytes(self) -> int:
        """Per GPU: weights and KV divided over the ranks; the overhead on each."""
        share = -(-(self.weights_bytes + self.kv_bytes) // self.gpus)
        return share + self.overhead_bytes

    @property
    def weights_per_gpu_bytes(self) -> int:
        return -(-self.weights_bytes // self.gpus)

    def tokens_fitting(self, budget_bytes: int) -> int:
        """The longest context (KV cells) whose cache fits `budget_bytes` per GPU beside the
        weights and overhead (0 when none does)."""
        room = (budget_bytes - self.overhead_bytes) * self.gpus - self.weights_bytes
        if room <= 0 or self.kv_bytes_per_token <= 0:
            return 0
        tokens = int(room // self.kv_bytes_per_token)
        step = LLAMACPP_CELL_PAD if self.engine == "llamacpp" else 16  # vLLM's block size
        return tokens // step * step

    def describe(self) -> str:
        """`weights 14.2 GiB (bfloat16, exact from the files) + KV 1.0 GiB at 8,192 tokens x 1
        (bfloat16) + overhead about 2.0 GiB`."""
        kv = f"KV {format_bytes(self.kv_bytes)} at {self.kv_tokens:,} tokens"
        kv += (
            f" shared by {self.kv_sequences} slots"
            if self.engine == "llamacpp"
            else f" x {self.kv_sequences}"
        )
        split = f", split over {self.gpus} GPUs" if self.gpus > 1 else ""
        note = f"; {self.kv_note}" if self.kv_note else ""
        return (
            f"weights {format_bytes(self.weights_bytes)} ({self.weights_method}) + {kv} "
            f"({self.kv_dtype}) + overhead about {format_bytes(self.overhead_bytes)}{split}{note}"
        )


class EstimateError(ValueError):
    """The service's flags make no estimate possible (an unknown cache type): said, not raised
    as a refusal."""


def estimate_llamacpp(
    shape: ModelShape, args: Sequence[str], *, on_cpu: bool = False
) -> FitEstimate:
    ctx_text = flag_value(args, *CTX_FLAGS)
    ctx = int(ctx_text) if ctx_text and ctx_text.isdigit() else 0
    note = ""
    if ctx == 0:
        ctx = shape.context_length or 4096
        if ctx_text is None and flag_value(args, *FIT_FLAGS) not in FIT_OFF:
            note = FIT_NOTE
    cells = -(-ctx // LLAMACPP_CELL_PAD) * LLAMACPP_CELL_PAD
    type_k = (flag_value(args, "-ctk", "--cache-type-k") or "f16").lower()
    type_v = (flag_value(args, "-ctv", "--cache-type-v") or "f16").lower()
    for kind in (type_k, type_v):
        if kind not in LLAMACPP_CACHE_TYPES:
            raise EstimateError(f"cache type {kind!r} is not one llama.cpp knows")
    k_elements, v_elements = shape.kv_elements_per_token
    per_token = (
        k_elements * LLAMACPP_CACHE_TYPES[type_k] + v_elements * LLAMACPP_CACHE_TYPES[type_v]
    )
    slots_text = flag_value(args, *PARALLEL_FLAGS)
    slots = (
        int(slots_text)
        if slots_text and slots_text.isdigit() and int(slots_text) > 0
        else LLAMACPP_DEFAULT_SLOTS
    )
    return FitEstimate(
        engine="llamacpp",
        weights_bytes=shape.weights_bytes,
        weights_method=f"{shape.weights_dtype}, exact from the file",
        kv_bytes=int(-(-cells * per_token // 1)),
        kv_tokens=cells,
        kv_sequences=slots,
        kv_bytes_per_token=per_token,
        kv_dtype=type_k if type_k == type_v else f"K {type_k}, V {type_v}",
        overhead_bytes=LLAMACPP_CPU_OVERHEAD_BYTES if on_cpu else LLAMACPP_OVERHEAD_BYTES,
        kv_note=note,
    )


def _vllm_dtype(shape: ModelShape, flag: str | None) -> str:
    wanted = (flag or "auto").lower()
    if wanted in ("half", "float16"):
        return "float16"
    if wanted in ("bfloat16", "float32"):
        return wanted
    if wanted == "float":
        return "float32"
    # auto: the config's dtype, float32 downcast to 16 bits (`_resolve_auto_dtype`); a GGUF
    # file's quantisation is no activation dtype: 16 bits too.
    if shape.weights_dtype in ("float32", "float64") or shape.weights_dtype not in DTYPE_BYTES:
        return "bfloat16"
    return shape.weights_dtype


def vllm_kv_space(
    args: Sequence[str], env: Sequence[tuple[str, str]] = (), *, on_cpu: bool = False
) -> tuple[int, str] | None:
    """The KV cache bytes (per GPU) vLLM allocates when its size is set, and what set it; None
    when vLLM sizes it from its memory share. Raises EstimateError for a value vLLM would
    refuse."""
    space = dict(env).get("VLLM_CPU_KVCACHE_SPACE", "").strip() if on_cpu else ""
    if space:
        if not space.isdigit():
            raise EstimateError(f"VLLM_CPU_KVCACHE_SPACE={space} is not a whole number of GiB")
        return int(space) * GIB, f"VLLM_CPU_KVCACHE_SPACE={space}"
    text = flag_value(args, "--kv-cache-memory-bytes")
    if text is None or text.strip().lower() == "auto":
        return None
    value = _vllm_int(text.strip())
    if value is None:
        raise EstimateError(f"--kv-cache-memory-bytes {text} is not a size vLLM reads")
    return value, f"--kv-cache-memory-bytes {text}"


def _vllm_int(text: str) -> int | None:
    """A size as vLLM's `human_readable_int` reads it: `2G` and `512M` binary (GiB, MiB), `2g`
    and `1.5m` decimal, or plain bytes."""
    binary = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    decimal = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
    if text[-1:] in binary and text[:-1].isdigit():
        return int(text[:-1]) * binary[text[-1]]
    if text[-1:] in decimal:
        number = text[:-1]
        if number.replace(".", "", 1).isdigit():
            return int(float(number) * decimal[text[-1]])
        return None
    return int(text) if text.isdigit() else None


def estimate_vllm(
    shape: ModelShape,
    args: Sequence[str],
    gpus: int = 1,
    *,
    env: Sequence[tuple[str, str]] = (),
    on_cpu: bool = False,
) -> FitEstimate:
    dtype = _vllm_dtype(shape, flag_value(args, "--dtype"))
    if shape.quantized or shape.parameters is None:
        weights = shape.weights_bytes
        method = f"{shape.weights_dtype}, exact from the files"
    elif DTYPE_BYTES.get(dtype, 2) * shape.parameters == shape.weights_bytes:
        weights = shape.weights_bytes
        method = f"{dtype}, exact from the files"
    else:
        weights = DTYPE_BYTES.get(dtype, 2) * shape.parameters
        method = f"{shape.parameters:,} parameters at {dtype}"
    length_text = flag_value(args, "--max-model-len")
    tokens = (
        int(length_text)
        if length_text and length_text.isdigit()
        else (shape.context_length or 4096)
    )
    kv_flag = (flag_value(args, "--kv-cache-dtype") or "auto").lower()
    kv_dtype = dtype if kv_flag == "auto" else kv_flag
    kv_size = 1 if kv_dtype.startswith("fp8") else DTYPE_BYTES.get(kv_dtype, 2)
    k_elements, v_elements = shape.kv_elements_per_token
    per_token = float((k_elements + v_elements) * kv_size)
    ranks = max(1, gpus)
    kv_bytes, note = int(tokens * per_token), ""
    space = vllm_kv_space(args, env, on_cpu=on_cpu)
    if space is not None:
        # Allocated whole, in 16-token blocks: the tokens it holds are what vLLM logs as its
        # "KV cache size"; fewer than one --max-model-len sequence and it refuses to start.
        each, source = space
        kv_bytes = each * ranks
        held = int(kv_bytes // per_token) // 16 * 16 if per_token > 0 else 0
        note = f"a fixed KV cache ({source})"
        if held < tokens:
            note += f", less than one {tokens:,}-token sequence: vLLM refuses to start"
        tokens = held
    elif on_cpu:
        note = (
            "vLLM on the CPU reserves 0.9 of this machine's memory unless VLLM_CPU_KVCACHE_SPACE "
            "or --kv-cache-memory-bytes sets its KV cache"
        )
    return FitEstimate(
        engine="vllm",
        weights_bytes=weights,
        weights_method=method,
        kv_bytes=kv_bytes,
        kv_tokens=tokens,
        kv_sequences=1,
        kv_bytes_per_token=per_token,
        kv_dtype=kv_dtype,
        overhead_bytes=VLLM_OVERHEAD_BYTES,
        gpus=ranks,
        kv_note=note,
    )


ESTIMATED_ENGINES = ("llamacpp", "vllm")


def estimate_fit(
    engine: str,
    shape: ModelShape,
    args: Sequence[str],
    gpus: int = 1,
    *,
    on_cpu: bool = False,
    env: Sequence[tuple[str, str]] = (),
) -> FitEstimate:
    """`env`: the service's own environment (what it sets for the engine)."""
    if engine == "llamacpp":
        return estimate_llamacpp(shape, args, on_cpu=on_cpu)
    if engine == "vllm":
        tp = flag_value(args, "--tensor-parallel-size", "-tp")
        ranks = int(tp) if tp and tp.isdigit() else gpus
        return estimate_vllm(shape, args, ranks, env=env, on_cpu=on_cpu)
    raise EstimateError(f"no estimate for engine {engine}")


class FitVerdict(StrEnum):
    FITS = "fits"  # weights, KV at the configured context and overhead fit the budget
    SHORT_CONTEXT = "short-context"  # the weights fit, the KV cache at that context does not
    TOO_SMALL = "too-small"  # the budget cannot hold the weights alone: refused
    NO_BUDGET = "no-budget"  # a CPU service, or no budget to compare with: the need is shown
    UNKNOWN = "unknown"  # the metadata cannot be read here (not downloaded): never refused


@dataclass(frozen=True, slots=True)
class ServiceFit:
    """One service's estimate beside its budget (per GPU, the smallest over its GPUs)."""

    service: str
    verdict: FitVerdict
    estimate: FitEstimate | None = None
    budget_bytes: int | None = None
    reason: str | None = None  # why unknown: "size unknown until downloaded (...)"
    fitting_tokens: int | None = None  # SHORT_CONTEXT: the longest context that would fit
    source: str | None = None  # where the metadata was read
    # The memory the budget is of: "vram" (per GPU, `vram:`) or "ram" (a CPU service's host
    # RAM, `ram:`, which `serve` claims from its RAM pool).
    pool: str = "vram"

    def summary(self) -> str:
        """One line for `profile plan`: "needs about 5.2 GiB, budget 8.0 GiB"."""
        if self.estimate is None:
            return self.reason or "size unknown until downloaded"
        need = f"needs about {format_bytes(self.estimate.needed_per_gpu_bytes)}"
        if self.estimate.gpus > 1 and self.pool == "vram":
            need += " per GPU"
        if self.budget_bytes is None:
            return need + (
                ", on the CPU, no `ram:` budget" if self.pool == "ram" else ", no GPU budget"
            )
        kind = "RAM budget" if self.pool == "ram" else "budget"
        text = f"{need}, {kind} {format_bytes(self.budget_bytes)}"
        if self.verdict is FitVerdict.TOO_SMALL:
            return text + ": cannot hold the weights"
        if self.verdict is FitVerdict.SHORT_CONTEXT:
            would = f"{self.fitting_tokens:,} would" if self.fitting_tokens else "none would"
            return (
                f"{text}: the KV cache at {self.estimate.kv_tokens:,} tokens does not fit; {would}"
            )
        return text


def judge_fit(
    service: str, estimate: FitEstimate, budget_bytes: int | None, pool: str = "vram"
) -> ServiceFit:
    """Compare an estimate with the service's budget: per GPU (`pool` "vram"), or a CPU
    service's host RAM ("ram"); None: no budget to compare with."""
    if budget_bytes is None:
        return ServiceFit(service, FitVerdict.NO_BUDGET, estimate, pool=pool)
    if estimate.weights_per_gpu_bytes > budget_bytes:
        return ServiceFit(service, FitVerdict.TOO_SMALL, estimate, budget_bytes, pool=pool)
    if estimate.needed_per_gpu_bytes > budget_bytes:
        return ServiceFit(
            service,
            FitVerdict.SHORT_CONTEXT,
            estimate,
            budget_bytes,
            fitting_tokens=estimate.tokens_fitting(budget_bytes),
            pool=pool,
        )
    return ServiceFit(service, FitVerdict.FITS, estimate, budget_bytes, pool=pool)
