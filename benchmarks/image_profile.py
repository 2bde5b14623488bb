"""Where an image's time goes on its way to a vector: decode, resize and crop, normalise, model forward.

Every stage runs alone on one thread over the same catalog JPEGs, so each figure is the cost on one
core. The embedding step overlaps decoding (its thread pool) with the forward (torch's threads), so
it keeps up with the model while decoding an image costs less than the forward does; the ratio of
the two is how many cores decoding needs per core the model uses.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence

import torch
from PIL import Image

from fashion_search_pipeline.models.encoders import pixel_plan
from fashion_search_pipeline.models.loading import LoadedClip

FORWARD_BATCH = 8


def run(clip: LoadedClip, uris: Sequence[str], read_image: Callable[[str], bytes]) -> dict:
    """Milliseconds per image of each stage on one thread, for the images at `uris`."""
    plan = pixel_plan(clip.preprocess)
    if plan is None:
        raise ValueError(f"{clip.spec.name}: the profile needs open_clip's shortest-side eval transform")
    encoded = [read_image(uri) for uri in uris]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        stages: dict[str, float] = {}
        decoded = _timed(stages, "decode", lambda: [_decode(data, plan.size) for data in encoded])
        pixels = _timed(stages, "resize_and_crop_uint8", lambda: [plan.uint8_pixels(image) for image in decoded])
        _timed(stages, "normalise_per_batch", lambda: plan.batch(pixels))
        _timed(stages, "open_clip_preprocess_per_image", lambda: [clip.preprocess(image) for image in decoded])
        batch = plan.batch(pixels[:FORWARD_BATCH]).to(dtype=clip.precision.weights_dtype)
        with torch.inference_mode():
            clip.model.encode_image(batch)  # warm-up at the measured batch
            started = time.perf_counter()
            clip.model.encode_image(batch)
            forward = (time.perf_counter() - started) / len(batch)
    finally:
        torch.set_num_threads(threads)
    per_image = {name: seconds / len(encoded) * 1000 for name, seconds in stages.items()}
    per_image["forward"] = forward * 1000
    pipeline = per_image["decode"] + per_image["resize_and_crop_uint8"] + per_image["normalise_per_batch"]
    return {
        "images": len(encoded),
        "image_size": list(Image.open(io.BytesIO(encoded[0])).size),
        "precision": clip.precision.label,
        "ms_per_image_one_thread": per_image,
        "decode_cores_per_model_core": pipeline / per_image["forward"],
    }


def _decode(data: bytes, size: int) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.draft("RGB", (size, size))
    return image.convert("RGB")


def _timed(stages: dict[str, float], name: str, work: Callable):
    started = time.perf_counter()
    result = work()
    stages[name] = time.perf_counter() - started
    return result
