"""Batched CLIP encoders: texts and images in, L2-normalised float32 vectors out.

Text: CLIP's text tower is causal and pools at one token (the EOT token), so tokens after the
pooled one never influence the result. Each batch is therefore cut to its longest real token
sequence, and texts are ordered by length before batching so short ones share short batches.

Images: decoding and preprocessing run on a thread pool (PIL releases the GIL while decoding and
resizing) one batch ahead of the model; JPEGs are decoded at reduced size (DCT scaling) when the
model needs far fewer pixels than the file holds.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from fashion_search_pipeline.models.loading import LoadedClip

K = TypeVar("K")

# Texts tokenized and length-sorted together: enough to group lengths well, little memory.
_TEXT_CHUNK_BATCHES = 16
_MAX_DECODE_WORKERS = 8
_POOLED_AT_ONE_TOKEN = ("argmax", "eos", "first")
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def encode_texts(clip: LoadedClip, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
    """Embed texts: float32 array (len(texts), embed_dim), rows L2-normalised, in input order."""
    size = batch_size or clip.batch_size
    vectors = np.empty((len(texts), clip.embed_dim), dtype=np.float32)
    tower = _causal_text_tower(clip.model)
    chunk = size * _TEXT_CHUNK_BATCHES
    for start in range(0, len(texts), chunk):
        tokens = clip.tokenizer(list(texts[start:start + chunk]))
        if tower is None:
            order = torch.arange(len(tokens))
        else:
            order = torch.argsort(tower.pooled_positions(tokens), stable=True)
        for batch in order.split(size):
            with _inference(clip):
                features = _text_features(clip, tower, tokens[batch])
            vectors[start + batch.numpy()] = _normalised(features)
    return vectors


def encode_images(
    clip: LoadedClip, images: Iterable[bytes | Image.Image], batch_size: int | None = None
) -> np.ndarray:
    """Embed images (encoded bytes or PIL images): float32 array (n, embed_dim), rows L2-normalised."""
    batches = [vectors for _, vectors in iter_image_batches(clip, enumerate(images), batch_size)]
    if not batches:
        return np.empty((0, clip.embed_dim), dtype=np.float32)
    return np.concatenate(batches)


def iter_image_batches(
    clip: LoadedClip, items: Iterable[tuple[K, bytes | Image.Image]], batch_size: int | None = None
) -> Iterator[tuple[list[K], np.ndarray]]:
    """Stream (keys, vectors) per batch; the next batch decodes on a thread pool while the model runs.

    Undecodable bytes raise ValueError naming the key.
    """
    size = batch_size or clip.batch_size
    draft_size = max(_as_pair(clip.model.visual.preprocess_cfg["size"]))
    batches = _batched(iter(items), size)
    workers = min(_MAX_DECODE_WORKERS, os.cpu_count() or 1)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="clip-decode")
    try:
        pending = _submit(pool, next(batches, None), clip, draft_size)
        while pending is not None:
            upcoming = _submit(pool, next(batches, None), clip, draft_size)
            pixels = torch.stack([_pixels_of(key, job) for key, job in zip(pending.keys, pending.jobs)])
            if clip.device.type == "cuda":
                pixels = pixels.pin_memory()
            with _inference(clip):
                features = clip.model.encode_image(pixels.to(clip.device, non_blocking=True))
            yield pending.keys, _normalised(features)
            pending = upcoming
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ---- text -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CausalTextTower:
    """The parts of an open_clip text transformer (CLIP, or CustomTextCLIP's .text) that encode_text uses."""

    module: torch.nn.Module
    pool_type: str
    eos_id: int | None

    def pooled_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """The position each sequence is pooled at, exactly as open_clip's text_global_pool picks it."""
        if self.pool_type == "argmax":
            return tokens.argmax(dim=-1)
        if self.pool_type == "eos":
            return (tokens == self.eos_id).int().argmax(dim=-1)
        return torch.zeros(tokens.shape[0], dtype=torch.long)


def _causal_text_tower(model: torch.nn.Module) -> _CausalTextTower | None:
    """The text tower when truncating its input is exact: causal mask, pooled at one token, no CLS suffix."""
    text = getattr(model, "text", model)
    parts = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")
    if not all(hasattr(text, part) for part in parts):
        return None
    pool_type = getattr(text, "text_pool_type", getattr(text, "pool_type", None))
    if getattr(text, "attn_mask", None) is None or pool_type not in _POOLED_AT_ONE_TOKEN:
        return None
    if getattr(text, "cls_emb", None) is not None:
        return None
    eos_id = getattr(text, "text_eos_id", getattr(text, "eos_id", None))
    return _CausalTextTower(text, pool_type, eos_id)


def _text_features(clip: LoadedClip, tower: _CausalTextTower | None, tokens: torch.Tensor) -> torch.Tensor:
    if tower is None:
        return clip.model.encode_text(tokens.to(clip.device))
    text = tower.module
    positions = tower.pooled_positions(tokens)
    length = int(positions.max()) + 1
    tokens, positions = tokens[:, :length].to(clip.device), positions.to(clip.device)
    cast_dtype = text.transformer.get_cast_dtype()
    x = text.token_embedding(tokens).to(cast_dtype) + text.positional_embedding[:length].to(cast_dtype)
    x = text.transformer(x, attn_mask=text.attn_mask[:length, :length])
    x = text.ln_final(x[torch.arange(x.shape[0], device=x.device), positions])  # LayerNorm is per token
    projection = text.text_projection
    if projection is None:
        return x
    if isinstance(projection, torch.nn.Linear):
        return projection(x)
    return x @ projection


# ---- images -----------------------------------------------------------------------------------


@dataclass
class _PendingBatch:
    keys: list
    jobs: list[Future]


def _batched(items: Iterator, size: int) -> Iterator[list]:
    while batch := list(itertools.islice(items, size)):
        yield batch


def _submit(pool: ThreadPoolExecutor, batch: list | None, clip: LoadedClip, draft_size: int) -> _PendingBatch | None:
    if batch is None:
        return None
    keys = [key for key, _ in batch]
    jobs = [pool.submit(_preprocess, clip, image, draft_size) for _, image in batch]
    return _PendingBatch(keys, jobs)


def _preprocess(clip: LoadedClip, image: bytes | Image.Image, draft_size: int) -> torch.Tensor:
    if not isinstance(image, Image.Image):
        image = Image.open(io.BytesIO(image))
        # JPEG only: decode at 1/2, 1/4 or 1/8 scale while both sides stay >= draft_size.
        image.draft("RGB", (draft_size, draft_size))
        image.load()
    return clip.preprocess(_rgb(image))


def _rgb(image: Image.Image) -> Image.Image:
    """RGB pixels; transparent areas become white (product cut-outs sit on white, not black)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _pixels_of(key, job: Future) -> torch.Tensor:
    try:
        return job.result()
    except _DECODE_ERRORS as exc:
        raise ValueError(f"image {key!r} cannot be decoded: {exc}") from exc


def _as_pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    return (int(size[0]), int(size[1]))


# ---- shared -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _inference(clip: LoadedClip) -> Iterator[None]:
    """inference_mode plus autocast at the model's precision (none for fp32)."""
    autocast = (
        torch.autocast(device_type=clip.device.type, dtype=clip.autocast_dtype)
        if clip.autocast_dtype is not None
        else contextlib.nullcontext()
    )
    with torch.inference_mode(), autocast:
        yield


def _normalised(features: torch.Tensor) -> np.ndarray:
    return F.normalize(features.float(), dim=-1).cpu().numpy()
