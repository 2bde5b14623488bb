"""What this machine can do: matmul throughput per dtype, native bf16, and a model's FLOPs per image."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from fashion_search_pipeline.models.loading import autocast_dtype_for


def describe_machine() -> dict:
    """CPU model, cores, load, torch's SIMD level, native bf16, and the CUDA device if any."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": autocast_dtype_for("auto", torch.device("cpu")) is torch.bfloat16,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_1min": os.getloadavg()[0],
    }


def matmul_gflops(dtype: torch.dtype, *, size: int = 2048, min_seconds: float = 1.0) -> float:
    """Sustained GFLOP/s of a square matmul in `dtype` on the CPU (best of repeated runs)."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    flops = 2 * size**3
    torch.mm(a, b)  # warm-up: thread pool, kernel selection
    best = float("inf")
    started = time.perf_counter()
    while time.perf_counter() - started < min_seconds or best == float("inf"):
        tick = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - tick)
    return flops / best / 1e9


def image_forward_flops(model: torch.nn.Module, image_size: int) -> float:
    """FLOPs of one image through model.encode_image (2 per multiply-add).

    Counted with autograd enabled: under no_grad/inference_mode nn.MultiheadAttention takes a
    fused path whose projections the counter cannot see (ViT-B-32 would show 5.9 instead of 8.7).
    """
    pixels = torch.randn(1, 3, image_size, image_size)
    with torch.enable_grad(), FlopCounterMode(display=False) as counter:
        model.encode_image(pixels)
    return float(counter.get_total_flops())


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
