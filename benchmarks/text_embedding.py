"""Text embedding throughput: models.encoders.encode_texts vs open_clip's full-length encode_text.

open_clip pads every text to the full context (77 tokens for CLIP); encode_texts sorts texts by
length and cuts each batch to its longest real sequence, which is exact for CLIP's causal text
tower. Both run on the same texts in interleaved rounds, alternating which goes first. The baseline
runs in fp32, encode_texts at the precision `auto` chose.

single_queries times one query at a time, as CatalogSearch.text encodes it, at several precisions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

from fashion_search_pipeline.models.encoders import encode_texts
from fashion_search_pipeline.models.loading import LoadedClip


def run(clip: LoadedClip, fp32_clip: LoadedClip, texts: Sequence[str], *, rounds: int, batch_size: int,
        log: Callable[[str], None]) -> dict:
    """Texts/s of encode_texts (clip) and the fp32 full-length encode, their lowest cosine, mean real tokens."""
    per_round = len(texts) // rounds
    encode_texts(clip, texts[:batch_size], batch_size=batch_size)  # warm-up both
    full_length_encode(fp32_clip, texts[:batch_size], batch_size)
    totals = {"full_length": 0.0, "encode_texts": 0.0}
    lowest = 1.0
    for number in range(rounds):
        chunk = list(texts[number * per_round:(number + 1) * per_round])
        ways = [("full_length", partial(full_length_encode, fp32_clip, chunk, batch_size)),
                ("encode_texts", partial(encode_texts, clip, chunk, batch_size=batch_size))]
        vectors = {}
        for name, way in ways if number % 2 == 0 else ways[::-1]:  # alternate which goes first
            started = time.perf_counter()
            vectors[name] = way()
            totals[name] += time.perf_counter() - started
        lowest = min(lowest, float((vectors["full_length"] * vectors["encode_texts"]).sum(axis=1).min()))
        log(f"text: round {number + 1}/{rounds}: full length {totals['full_length']:.1f} s, "
            f"encode_texts {totals['encode_texts']:.1f} s")
    count = per_round * rounds
    tokens = clip.tokenizer(list(texts[:count]))
    return {
        "texts": count,
        "batch_size": batch_size,
        "texts_per_second": {name: count / seconds for name, seconds in totals.items()},
        "min_cosine_vs_full_length": lowest,
        "mean_tokens": float((tokens != 0).sum(dim=1).float().mean()),
        "context_length": int(tokens.shape[1]),
        "precision": clip.precision.label,
    }


def single_queries(clips: Mapping[str, LoadedClip], texts: Sequence[str]) -> dict:
    """p50 ms of encode_texts on one text at a time for each clip, interleaved query by query."""
    for clip in clips.values():
        encode_texts(clip, [texts[0]])  # warm-up
    latencies: dict[str, list[float]] = {name: [] for name in clips}
    for number, text in enumerate(texts[1:]):
        names = list(clips) if number % 2 == 0 else list(clips)[::-1]
        for name in names:
            started = time.perf_counter()
            encode_texts(clips[name], [text])
            latencies[name].append(time.perf_counter() - started)
    return {name: {"p50_ms": float(np.median(values) * 1000), "queries": len(values)}
            for name, values in latencies.items()}


def full_length_encode(clip: LoadedClip, texts: Sequence[str], batch_size: int) -> np.ndarray:
    """The baseline: open_clip's tokenizer and encode_text over the full padded context, fp32."""
    batches = []
    for start in range(0, len(texts), batch_size):
        tokens = clip.tokenizer(list(texts[start:start + batch_size])).to(clip.device)
        with torch.no_grad():
            batches.append(F.normalize(clip.model.encode_text(tokens).float(), dim=-1).cpu().numpy())
    return np.concatenate(batches)
