"""The one device/precision policy, for inference and for training, and the short probe that decides `auto`.

Inference (`inference_precision`):

- an explicit setting wins: "fp32"; "bf16" (weights converted to bf16 once, no autocast: on a CPU
  that only emulates bf16 this runs correctly but slowly, and says so); "fp16" (fp16 autocast);
- "auto" on CUDA: fp16 autocast (same speed as bf16 on GPUs, three more mantissa bits);
- "auto" on a CPU: what the loaded model measures (`probe_bf16`). bf16 weights when they run the model
  faster than fp32 and agree with it (min cosine >= MIN_COSINE), else fp32. Autocast is never chosen
  on a CPU: measured on an AMX Xeon, its per-forward weight casts made ViT-B-32 0.75x as fast as fp32,
  while weights converted once ran 4.7x faster;
- anything else (MPS): fp32.

Training (`training_autocast`): fp32 master weights always; autocast bf16 on CUDA (no loss scaling
needed) or fp16 with a gradient scaler where bf16 is unsupported; on a CPU bf16 autocast only when a
measured step is faster (the caller passes that measurement), else fp32. Inference and training differ
on CUDA on purpose: fp16's narrow range needs loss scaling in training, never in inference.

Nothing here imports torch at module import: the code location loads without it.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

MIN_COSINE = 0.999
# bf16 must beat fp32 by this much to be chosen: a margin against timing noise on a shared machine.
MIN_SPEEDUP = 1.15
PROBE_IMAGES = 4
PROBE_TEXTS = ("red summer dress", "Puma Men Ferrari Black Fleece Jacket", "navy blue backpack", "white sneakers")
# Rows of the layer probe: enough that the matmul runs the batched kernel, not the one for a vector.
LAYER_PROBE_ROWS = 64
_PROBE_REPEATS = 3

_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


@dataclass(frozen=True)
class Precision:
    """How a loaded model runs: its weights' dtype ("fp32" or "bf16") and its autocast dtype (None: none)."""

    weights: str = "fp32"
    autocast: str | None = None

    @property
    def label(self) -> str:
        """"fp32", "bf16 weights", "fp16 autocast", ...: what the bench and the logs print."""
        if self.autocast is not None:
            return f"{self.autocast} autocast"
        return "fp32" if self.weights == "fp32" else f"{self.weights} weights"

    @property
    def weights_dtype(self) -> torch.dtype:
        """The torch dtype the model's weights (and so its inputs) are in."""
        return _torch_dtype(self.weights)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The torch dtype to autocast forward passes to; None for none."""
        return None if self.autocast is None else _torch_dtype(self.autocast)


FP32 = Precision()
BF16_WEIGHTS = Precision(weights="bf16")
FP16_AUTOCAST = Precision(autocast="fp16")
BF16_AUTOCAST = Precision(autocast="bf16")


@dataclass(frozen=True)
class Bf16Probe:
    """What a short measurement found: fp32 and bf16 throughput (items/s) and their lowest cosine.

    stage "layer": the model's widest linear layer only; bf16 lost there, so the model was not run in
    bf16 (min_cosine None). stage "model": both towers, images and texts (the slower of the two ratios).
    """

    stage: str
    fp32_per_second: float
    bf16_per_second: float
    min_cosine: float | None = None

    @property
    def speedup(self) -> float:
        """bf16 throughput over fp32 throughput."""
        return self.bf16_per_second / self.fp32_per_second


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a model runs at, why, the probe behind it (None when nothing was measured), and
    whether the reason is a warning (bf16 forced on a CPU that emulates it, or bf16 disagreeing)."""

    precision: Precision
    reason: str
    probe: Bf16Probe | None = None
    warning: bool = False


def decide_cpu_auto(probe: Bf16Probe) -> PrecisionChoice:
    """`auto` on a CPU, from what the probe measured: bf16 weights only if faster and in agreement."""
    speeds = (f"bf16 {probe.bf16_per_second:.1f}/s vs fp32 {probe.fp32_per_second:.1f}/s "
              f"({probe.speedup:.2f}x, {probe.stage} probe)")
    if probe.speedup < MIN_SPEEDUP:
        return PrecisionChoice(FP32, f"fp32: bf16 is not faster on this CPU: {speeds}", probe)
    if probe.min_cosine is None or probe.min_cosine < MIN_COSINE:
        return PrecisionChoice(
            FP32, f"fp32: bf16 weights disagree with fp32 (min cosine {probe.min_cosine}, needs >= {MIN_COSINE}) "
            f"although faster: {speeds}; falling back to fp32", probe, warning=True)
    return PrecisionChoice(BF16_WEIGHTS, f"bf16 weights: {speeds}, min cosine {probe.min_cosine:.5f}", probe)


def inference_precision(requested: str, device: torch.device,
                        probe: Callable[[], Bf16Probe] | None = None) -> PrecisionChoice:
    """The precision a model set to `requested` runs at on `device`.

    probe measures the loaded model (see probe_bf16); it runs only for "auto" on a CPU, and for "bf16"
    on a CPU, to warn when bf16 is emulated and slow.
    """
    if requested == "fp32":
        return PrecisionChoice(FP32, "fp32: set in the registry")
    if requested == "fp16":
        return PrecisionChoice(FP16_AUTOCAST, "fp16 autocast: set in the registry")
    if requested == "bf16":
        return _forced_bf16(device, probe)
    if device.type == "cuda":
        return PrecisionChoice(FP16_AUTOCAST, "fp16 autocast: auto on CUDA")
    if device.type != "cpu" or probe is None:
        return PrecisionChoice(FP32, f"fp32: auto on {device.type}")
    return decide_cpu_auto(probe())


def _forced_bf16(device: torch.device, probe: Callable[[], Bf16Probe] | None) -> PrecisionChoice:
    if device.type != "cpu" or probe is None:
        return PrecisionChoice(BF16_WEIGHTS, "bf16 weights: set in the registry")
    measured = probe()
    if measured.speedup < 1.0:
        return PrecisionChoice(
            BF16_WEIGHTS, f"bf16 weights: set in the registry, but this CPU emulates bf16 and runs it "
            f"{1 / measured.speedup:.1f}x slower than fp32 (bf16 {measured.bf16_per_second:.1f}/s vs fp32 "
            f"{measured.fp32_per_second:.1f}/s, {measured.stage} probe): expect slow encoding; "
            "set precision: auto or fp32", measured, warning=True)
    return PrecisionChoice(BF16_WEIGHTS, "bf16 weights: set in the registry", measured)


def training_autocast(requested: str, device: torch.device,
                      cpu_step_speedup: Callable[[], float] | None = None) -> tuple[str | None, str]:
    """(autocast dtype name or None, reason) for training at `requested` precision on `device`.

    Master weights stay fp32 in every case. cpu_step_speedup measures a training step under bf16
    autocast against fp32 (>1: bf16 faster); "auto" on a CPU uses bf16 only when that is >= MIN_SPEEDUP.
    """
    import torch

    if requested == "fp32":
        return None, "fp32: set in the config"
    if requested == "fp16" and device.type != "cuda":
        raise ValueError("precision 'fp16' needs a CUDA device; use 'bf16' or 'fp32' on the CPU")
    if requested in ("bf16", "fp16"):
        return requested, f"{requested} autocast: set in the config"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "bf16 autocast: auto on CUDA"
        return "fp16", "fp16 autocast with loss scaling: auto on a CUDA device without bf16"
    if device.type != "cpu" or cpu_step_speedup is None:
        return None, f"fp32: auto on {device.type}"
    speedup = cpu_step_speedup()
    if speedup >= MIN_SPEEDUP:
        return "bf16", f"bf16 autocast: a training step measured {speedup:.2f}x faster than fp32"
    return None, f"fp32: a bf16-autocast training step measured {speedup:.2f}x fp32's speed"


# ---- the probe ----------------------------------------------------------------------------------


_probes: dict[tuple, Bf16Probe] = {}


def probe_bf16(model: torch.nn.Module, tokenizer: Callable, image_size: int, *, key: tuple) -> Bf16Probe:
    """Measure bf16 weights against fp32 on this model, once per process and key (model version, device).

    First the model's widest linear layer at LAYER_PROBE_ROWS rows (milliseconds, even where bf16 is
    emulated); only if bf16 wins there, both towers on PROBE_IMAGES random images and PROBE_TEXTS, with
    their lowest cosine to fp32. Logs both speeds.
    """
    cached = _probes.get(key)
    if cached is not None:
        return cached
    started = time.perf_counter()
    layer = widest_linear(model)
    measured = None
    if layer is not None:
        fp32, bf16 = layer_speeds(layer, LAYER_PROBE_ROWS)
        measured = Bf16Probe("layer", fp32, bf16)
    if measured is None or measured.speedup >= MIN_SPEEDUP:
        measured = model_probe(model, tokenizer, image_size)
    logger.info("bf16 probe (%s, %s stage, %.2f s): fp32 %.1f/s, bf16 %.1f/s, min cosine %s", key, measured.stage,
                time.perf_counter() - started, measured.fp32_per_second, measured.bf16_per_second,
                measured.min_cosine)
    _probes[key] = measured
    return measured


def widest_linear(model: torch.nn.Module) -> torch.nn.Linear | None:
    """The nn.Linear with the most weights (a transformer's MLP), or None when the model has none."""
    import torch

    layers = [module for module in model.modules() if isinstance(module, torch.nn.Linear)]
    return max(layers, key=lambda layer: layer.weight.numel(), default=None)


def layer_speeds(layer: torch.nn.Linear, rows: int) -> tuple[float, float]:
    """(fp32, bf16) rows/s of `layer` on `rows` random rows, each the best of a few warm runs.

    bf16 runs once more only while it is not already slower than fp32, so an emulating CPU pays little.
    """
    import torch

    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(rows, layer.in_features, generator=generator, dtype=layer.weight.dtype)
    bf16_layer = copy.deepcopy(layer).to(torch.bfloat16)
    with torch.inference_mode():
        fp32 = _best_seconds(lambda: layer(inputs), _PROBE_REPEATS)
        bf16_inputs = inputs.to(torch.bfloat16)
        bf16_layer(bf16_inputs)  # warm-up
        bf16 = _best_seconds(lambda: bf16_layer(bf16_inputs), 1)
        if bf16 < fp32:
            bf16 = min(bf16, _best_seconds(lambda: bf16_layer(bf16_inputs), _PROBE_REPEATS - 1))
    return rows / fp32, rows / bf16


def model_probe(model: torch.nn.Module, tokenizer: Callable, image_size: int) -> Bf16Probe:
    """Both towers in fp32 and with bf16 weights: the slower tower's throughputs and the lowest cosine."""
    import torch

    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(PROBE_IMAGES, 3, image_size, image_size, generator=generator)
    tokens = tokenizer(list(PROBE_TEXTS))
    bf16_model = copy.deepcopy(model).to(torch.bfloat16)
    ratios, cosines = [], []
    with torch.inference_mode():
        for encode, inputs, is_pixels in ((_encode_image, pixels, True), (_encode_text, tokens, False)):
            fp32_out = encode(model, inputs)
            bf16_inputs = inputs.to(torch.bfloat16) if is_pixels else inputs
            bf16_out = encode(bf16_model, bf16_inputs)  # warm-up at the measured batch
            cosines.append(float(torch.nn.functional.cosine_similarity(fp32_out.float(), bf16_out.float()).min()))
            fp32_s, bf16_s = _interleaved(partial(encode, model, inputs), partial(encode, bf16_model, bf16_inputs))
            ratios.append((len(inputs) / fp32_s, len(inputs) / bf16_s))
    fp32, bf16 = min(ratios, key=lambda pair: pair[1] / pair[0])
    return Bf16Probe("model", fp32, bf16, min(cosines))


def _encode_image(model: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    return model.encode_image(pixels)


def _encode_text(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    return model.encode_text(tokens)


def _interleaved(first: Callable, second: Callable) -> tuple[float, float]:
    """Best seconds of each over a few rounds that alternate which runs first."""
    times: tuple[list[float], list[float]] = ([], [])
    for round_number in range(_PROBE_REPEATS - 1):
        order: Sequence[int] = (0, 1) if round_number % 2 == 0 else (1, 0)
        for index in order:
            times[index].append(_best_seconds((first, second)[index], 1))
    return min(times[0]), min(times[1])


def _best_seconds(run: Callable, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def _torch_dtype(name: str) -> torch.dtype:
    import torch

    return getattr(torch, _DTYPES[name])


def cpu_has_native_bf16() -> bool:
    """Whether torch reports AVX512-BF16 or AMX tiles (informational: decisions rest on measurements)."""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, check, lambda: False)() for check in checks)
