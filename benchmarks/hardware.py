"""What this machine can do: matmul throughput per dtype, native bf16, and a model's FLOPs per image."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from fashion_search_pipeline.models.precision import cpu_has_native_bf16

# 2048² reaches the peak of fp32 and of native bf16 (at 512² an AMX Xeon showed half its bf16 peak).
MATMUL_SIZES = (512, 1024, 2048)
SLOW_MATMUL_SECONDS = 0.5


def describe_machine() -> dict:
    """CPU model, cores, load, torch's SIMD level, native bf16 flags, and the CUDA device if any."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": cpu_has_native_bf16(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_1min": os.getloadavg()[0],
    }


def matmul_gflops(dtype: torch.dtype, *, sizes: tuple[int, ...] = MATMUL_SIZES, min_seconds: float = 1.0) -> dict:
    """Peak GFLOP/s of a square CPU matmul in `dtype`: {"gflops", "size"} at the size that reached it.

    Sizes grow until one matmul takes longer than SLOW_MATMUL_SECONDS: a kernel that slow (emulated
    bf16) has reached its peak long before, and a larger size would only cost minutes.
    """
    best = {"gflops": 0.0, "size": sizes[0]}
    for size in sizes:
        a = torch.randn(size, size).to(dtype)
        b = torch.randn(size, size).to(dtype)
        torch.mm(a, b)  # warm-up: thread pool, kernel selection, at this size
        fastest = float("inf")
        started = time.perf_counter()
        while time.perf_counter() - started < min_seconds or fastest == float("inf"):
            tick = time.perf_counter()
            torch.mm(a, b)
            fastest = min(fastest, time.perf_counter() - tick)
        gflops = 2 * size**3 / fastest / 1e9
        if gflops > best["gflops"]:
            best = {"gflops": gflops, "size": size}
        if fastest > SLOW_MATMUL_SECONDS:
            break
    return best


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
