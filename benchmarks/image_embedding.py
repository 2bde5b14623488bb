"""Image embedding throughput: end to end (JPEG files -> LanceDB rows) vs the model alone and a plain loop.

Three ways of running the same model are timed in interleaved rounds, each round starting with a
different one, so a neighbour's load on a shared machine slows them alike:

- ceiling: model.encode_image on random pixel tensors (no decoding, no I/O), at the precision
  `auto` chose for this machine;
- plain loop: what an open_clip README loop does: PIL full decode, preprocess, stack, fp32 forward;
- end to end: embedding_sync.sync_embeddings on the catalog's JPEG files into a LanceDB table.

precision_forwards compares the image tower's forward in fp32, with bf16 weights and under bf16
autocast, each warmed at the batch it is measured at, in interleaved rounds.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
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
from fashion_search_pipeline.models.precision import BF16_AUTOCAST, BF16_WEIGHTS, FP32, PrecisionChoice
from fashion_search_pipeline.store.tables import open_existing_table, table_name


def run(
    clip: LoadedClip,
    fp32_clip: LoadedClip,
    catalog: pl.DataFrame,
    db,
    read_image: Callable[[str], bytes],
    *,
    rounds: int,
    batch_size: int,
    log: Callable[[str], None],
) -> dict:
    """Images/s of the three ways, and how closely the end-to-end vectors match the fp32 plain loop.

    clip runs the ceiling and the end-to-end step at the precision `auto` chose; fp32_clip (the same
    weights in fp32) runs the plain loop.
    """
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
        plain_vectors.append(plain_open_clip_loop(fp32_clip, uris, batch_size))
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
        "precision": clip.precision.label,
        "device": str(clip.device),
    }


def bf16_weights_copy(chosen: LoadedClip, fp32_clip: LoadedClip) -> LoadedClip:
    """The model with bf16 weights: the chosen one when `auto` picked them, else a converted copy."""
    if chosen.precision == BF16_WEIGHTS:
        return chosen
    return dataclasses.replace(fp32_clip, model=copy.deepcopy(fp32_clip.model).to(torch.bfloat16),
                               precision_choice=PrecisionChoice(BF16_WEIGHTS, "bf16 weights (bench copy)"))


def precision_forwards(fp32_clip: LoadedClip, bf16_clip: LoadedClip, *, batch_size: int, rounds: int) -> dict:
    """Images/s of the image tower in fp32, with bf16 weights and under bf16 autocast, and min cosines vs fp32.

    Each is warmed at `batch_size` (the size it is measured at), then the rounds interleave the three,
    each round starting with a different one; the figure is each one's median round.
    """
    assert fp32_clip.precision == FP32 and bf16_clip.precision == BF16_WEIGHTS
    ways = {
        "fp32": fp32_clip,
        "bf16_weights": bf16_clip,
        "bf16_autocast": dataclasses.replace(fp32_clip, precision_choice=PrecisionChoice(BF16_AUTOCAST, "bench")),
    }
    side = image_size(fp32_clip)
    pixels = torch.randn(batch_size, 3, side, side, generator=torch.Generator().manual_seed(0))
    outputs = {name: _forward(clip, pixels) for name, clip in ways.items()}  # warm-up at the measured batch
    seconds = {name: [] for name in ways}
    names = list(ways)
    for number in range(rounds):
        for name in names[number % 3:] + names[:number % 3]:
            started = time.perf_counter()
            _forward(ways[name], pixels)
            seconds[name].append(time.perf_counter() - started)
    return {
        "batch_size": batch_size,
        "rounds": rounds,
        "images_per_second": {name: batch_size / float(np.median(times)) for name, times in seconds.items()},
        "min_cosine_vs_fp32": {name: float((outputs[name] * outputs["fp32"]).sum(dim=1).min())
                               for name in names[1:]},
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


def _forward(clip: LoadedClip, pixels: torch.Tensor) -> torch.Tensor:
    """Normalised encode_image of `pixels` under inference_mode, at the clip's precision."""
    dtype = clip.precision.autocast_dtype
    autocast = (
        torch.autocast(device_type=clip.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    )
    with torch.inference_mode(), autocast:
        features = clip.model.encode_image(pixels.to(clip.device, dtype=clip.precision.weights_dtype))
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
