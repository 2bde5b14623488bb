"""Image embedding throughput: end to end (JPEG files -> LanceDB rows) vs the model alone and a plain loop.

Three ways of running the same model are timed in interleaved rounds, each round starting with a
different one, so a neighbour's load on a shared machine slows them alike:

- ceiling: model.encode_image on random pixel tensors (no decoding, no I/O), at the precision the
  encoder picks for this device;
- plain loop: what an open_clip README loop does: PIL full decode, preprocess, stack, fp32 forward;
- end to end: embedding_sync.sync_embeddings on the catalog's JPEG files into a LanceDB table.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from PIL import Image

from fashion_search_pipeline import columns as C
from fashion_search_pipeline.embedding_sync import sync_embeddings
from fashion_search_pipeline.models.loading import LoadedClip
from fashion_search_pipeline.store.tables import open_existing_table, table_name

BF16_PROBE_IMAGES = 4


def run(
    clip: LoadedClip,
    catalog: pl.DataFrame,
    db,
    read_image: Callable[[str], bytes],
    *,
    rounds: int,
    batch_size: int,
    log: Callable[[str], None],
) -> dict:
    """Images/s of the three ways, and how closely the end-to-end vectors match the fp32 plain loop."""
    per_round = 2 * batch_size
    needed = rounds * per_round
    if catalog.height < needed:
        raise ValueError(f"the image benchmark needs {needed} catalog items, the catalog has {catalog.height}")
    size = image_size(clip)
    pixels = torch.randn(batch_size, 3, size, size)
    _forward(clip, pixels)  # warm-up: weights paged in, kernels picked, buffers allocated
    totals = {"ceiling": [0, 0.0], "plain_loop": [0, 0.0], "end_to_end": [0, 0.0]}
    plain_vectors = []

    def ceiling(number: int) -> int:
        _forward(clip, pixels)
        return batch_size

    def plain_loop(number: int) -> int:
        uris = catalog[C.IMAGE_URI][number * per_round:number * per_round + batch_size].to_list()
        plain_vectors.append(plain_open_clip_loop(clip, uris, batch_size))
        return len(uris)

    def end_to_end(number: int) -> int:
        catalog_so_far = catalog.head((number + 1) * per_round)  # the round's items are the new ones
        return sync_embeddings(catalog_so_far, db, clip, "image", read_image=read_image).embedded

    ways = [("ceiling", ceiling), ("plain_loop", plain_loop), ("end_to_end", end_to_end)]
    for number in range(rounds):
        # Each round starts with a different way, so none always runs first or last.
        for name, way in ways[number % 3:] + ways[:number % 3]:
            started = time.perf_counter()
            totals[name][0] += way(number)
            totals[name][1] += time.perf_counter() - started
        log(
            "image: round {}/{}: ceiling {:.2f}, plain loop {:.2f}, end to end {:.2f} images/s".format(
                number + 1, rounds, *(count / seconds for count, seconds in totals.values())
            )
        )
    rates = {name: count / seconds for name, (count, seconds) in totals.items()}
    return {
        "batch_size": batch_size,
        "images": {name: count for name, (count, _) in totals.items()},
        "images_per_second": rates,
        "min_cosine_end_to_end_vs_plain_fp32": _agreement(
            clip, db, catalog, rounds, per_round, batch_size, plain_vectors
        ),
        "precision": str(clip.autocast_dtype or torch.float32).removeprefix("torch."),
        "device": str(clip.device),
    }


def bf16_probe(clip: LoadedClip) -> dict:
    """bf16 autocast vs fp32 on a few random images: speed ratio and the lowest cosine between them."""
    pixels = torch.randn(BF16_PROBE_IMAGES, 3, image_size(clip), image_size(clip))
    results = {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        _forward(clip, pixels[:1], dtype=dtype)
        started = time.perf_counter()
        results[name] = (_forward(clip, pixels, dtype=dtype), time.perf_counter() - started)
    cosine = (results["fp32"][0] * results["bf16"][0]).sum(dim=1).min()
    return {
        "fp32_images_per_second": BF16_PROBE_IMAGES / results["fp32"][1],
        "bf16_images_per_second": BF16_PROBE_IMAGES / results["bf16"][1],
        "min_cosine_bf16_vs_fp32": float(cosine),
    }


def plain_open_clip_loop(clip: LoadedClip, paths: list[str], batch_size: int) -> np.ndarray:
    """The baseline: decode each file in full with PIL, preprocess, stack, fp32 forward under no_grad."""
    batches = []
    for start in range(0, len(paths), batch_size):
        images = [clip.preprocess(Image.open(path).convert("RGB")) for path in paths[start:start + batch_size]]
        with torch.no_grad():
            features = clip.model.encode_image(torch.stack(images).to(clip.device))
        batches.append(F.normalize(features.float(), dim=-1).cpu().numpy())
    return np.concatenate(batches)


def _forward(clip: LoadedClip, pixels: torch.Tensor, *, dtype: torch.dtype | None | str = "model") -> torch.Tensor:
    """Normalised encode_image of `pixels` under inference_mode, autocast to `dtype` ("model": the clip's)."""
    dtype = clip.autocast_dtype if dtype == "model" else dtype
    autocast = (
        torch.autocast(device_type=clip.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    )
    with torch.inference_mode(), autocast:
        features = clip.model.encode_image(pixels.to(clip.device))
    if clip.device.type == "cuda":
        torch.cuda.synchronize()
    return F.normalize(features.float(), dim=-1).cpu()


def _agreement(clip, db, catalog, rounds, per_round, batch_size, plain_vectors) -> float:
    """Lowest cosine between the stored end-to-end vectors and the plain loop's fp32 ones (same images)."""
    table = open_existing_table(db, table_name(clip.spec.name, "image"))
    stored = pl.from_arrow(table.search().select([C.ITEM_ID, C.VECTOR]).limit(None).to_arrow())
    by_id = dict(zip(stored[C.ITEM_ID].to_list(), stored[C.VECTOR].to_list()))
    lowest = 1.0
    for number, plain in enumerate(plain_vectors):
        ids = catalog[C.ITEM_ID][number * per_round:number * per_round + batch_size].to_list()
        ours = np.asarray([by_id[item_id] for item_id in ids], dtype=np.float32)
        lowest = min(lowest, float((ours * plain).sum(axis=1).min()))
    return lowest


def image_size(clip: LoadedClip) -> int:
    """The side of the square image the model takes."""
    size = clip.model.visual.preprocess_cfg["size"]
    return int(size if isinstance(size, int) else max(size))
