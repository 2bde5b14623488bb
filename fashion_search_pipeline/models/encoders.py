"""Batched CLIP encoders: texts and images in, L2-normalised float32 vectors out.

Text: CLIP's text tower is causal and pools at one token (the EOT token), so tokens after the
pooled one never influence the result. Each batch is therefore cut to its longest real token
sequence, and texts are ordered by length before batching so short ones share short batches.

Images: decoding and preprocessing run on a thread pool (PIL releases the GIL while decoding and
resizing) one batch ahead of the model; JPEGs are decoded at reduced size (DCT scaling) when the
model needs far fewer pixels than the file holds. For open_clip's usual eval transform (resize the
short side, centre crop, to tensor, normalise) the threads stop at uint8 pixels, exactly as PIL
resizes and crops them, and the batch is converted and normalised in one tensor operation: per image,
torchvision's to_tensor and Normalize cost more than the decode itself.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np
from PIL import Image

from fashion_search_pipeline.models.loading import LoadedClip

if TYPE_CHECKING:
    import torch

K = TypeVar("K")

# Texts tokenized and length-sorted together: enough to group lengths well, little memory.
_TEXT_CHUNK_BATCHES = 16
_MAX_DECODE_WORKERS = 8
_POOLED_AT_ONE_TOKEN = ("argmax", "eos", "first")
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def encode_texts(clip: LoadedClip, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
    """Embed texts: float32 array (len(texts), embed_dim), rows L2-normalised, in input order."""
    import torch
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
    import torch
    size = batch_size or clip.batch_size
    draft_size = max(_as_pair(clip.model.visual.preprocess_cfg["size"]))
    plan = pixel_plan(clip.preprocess)
    batches = _batched(iter(items), size)
    workers = min(_MAX_DECODE_WORKERS, os.cpu_count() or 1)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="clip-decode")
    try:
        pending = _submit(pool, next(batches, None), clip, draft_size, plan)
        while pending is not None:
            upcoming = _submit(pool, next(batches, None), clip, draft_size, plan)
            decoded = [_pixels_of(key, job) for key, job in zip(pending.keys, pending.jobs)]
            pixels = plan.batch(decoded) if plan is not None else torch.stack(decoded)
            yield pending.keys, encode_pixels(clip, pixels)
            pending = upcoming
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def encode_pixels(clip: LoadedClip, pixels: torch.Tensor) -> np.ndarray:
    """Embed a batch of preprocessed float pixels (n, 3, size, size) at the model's precision: (n, embed_dim)."""
    if clip.device.type == "cuda":
        pixels = pixels.pin_memory()
    with _inference(clip):
        pixels = pixels.to(clip.device, dtype=clip.precision.weights_dtype, non_blocking=True)
        return _normalised(clip.model.encode_image(pixels))


# ---- text -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CausalTextTower:
    """The parts of an open_clip text transformer (CLIP, or CustomTextCLIP's .text) that encode_text uses."""

    module: torch.nn.Module
    pool_type: str
    eos_id: int | None

    def pooled_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """The position each sequence is pooled at, exactly as open_clip's text_global_pool picks it."""
        import torch
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
    import torch
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


def _submit(pool: ThreadPoolExecutor, batch: list | None, clip: LoadedClip, draft_size: int,
            plan: PixelPlan | None) -> _PendingBatch | None:
    if batch is None:
        return None
    keys = [key for key, _ in batch]
    jobs = [pool.submit(preprocess_image, clip, image, draft_size, plan) for _, image in batch]
    return _PendingBatch(keys, jobs)


@dataclass(frozen=True)
class PixelPlan:
    """open_clip's shortest-side eval transform, split into a uint8 part per image and a float part per batch."""

    size: int
    resample: Image.Resampling
    mean: torch.Tensor  # (1, 3, 1, 1), in 0-255 units
    std: torch.Tensor

    def uint8_pixels(self, image: Image.Image) -> np.ndarray:
        """(size, size, 3) uint8: torchvision's Resize(size) and CenterCrop(size) on a PIL image, done by PIL."""
        width, height = image.size
        short, long = min(width, height), max(width, height)
        new_long = int(self.size * long / short)
        target = (self.size, new_long) if width <= height else (new_long, self.size)
        if target != image.size:
            image = image.resize(target, self.resample)
        left, top = int(round((target[0] - self.size) / 2.0)), int(round((target[1] - self.size) / 2.0))
        return np.asarray(image.crop((left, top, left + self.size, top + self.size)))

    def batch(self, pixels: list[np.ndarray]) -> torch.Tensor:
        """(n, 3, size, size) float32, normalised as the transform's ToTensor and Normalize would."""
        import torch
        stacked = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float()
        return stacked.sub_(self.mean).div_(self.std)


def pixel_plan(preprocess) -> PixelPlan | None:
    """The split plan when preprocess is exactly open_clip's square shortest-side eval transform, else None."""
    import torch
    from open_clip.transform import MaybeConvertMode, MaybeToTensor
    from torchvision.transforms import CenterCrop, Normalize, Resize
    from torchvision.transforms.functional import pil_modes_mapping
    steps = list(getattr(preprocess, "transforms", []))
    kinds = (Resize, CenterCrop, MaybeConvertMode, MaybeToTensor, Normalize)
    if len(steps) != len(kinds) or not all(type(step) is kind for step, kind in zip(steps, kinds)):
        return None
    resize, crop, mode, _, normalize = steps
    size = resize.size[0] if isinstance(resize.size, (list, tuple)) and len(resize.size) == 1 else resize.size
    if (not isinstance(size, int) or resize.max_size is not None or tuple(crop.size) != (size, size)
            or mode.mode != "RGB" or resize.interpolation not in pil_modes_mapping):
        return None
    scale = 255.0
    mean = torch.tensor(normalize.mean, dtype=torch.float32).view(1, 3, 1, 1) * scale
    std = torch.tensor(normalize.std, dtype=torch.float32).view(1, 3, 1, 1) * scale
    return PixelPlan(size, Image.Resampling(pil_modes_mapping[resize.interpolation]), mean, std)


def preprocess_image(clip: LoadedClip, image: bytes | Image.Image, draft_size: int,
                plan: PixelPlan | None = None) -> torch.Tensor | np.ndarray:
    """Decoded pixels for the batch: uint8 (size, size, 3) with a plan, else the model's preprocess tensor."""
    if not isinstance(image, Image.Image):
        image = Image.open(io.BytesIO(image))
        # JPEG only: decode at 1/2, 1/4 or 1/8 scale while both sides stay >= draft_size.
        image.draft("RGB", (draft_size, draft_size))
        image.load()
    if plan is not None:
        return plan.uint8_pixels(_rgb(image))
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
    except DECODE_ERRORS as exc:
        raise ValueError(f"image {key!r} cannot be decoded: {exc}") from exc


def _as_pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    return (int(size[0]), int(size[1]))


# ---- shared -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _inference(clip: LoadedClip) -> Iterator[None]:
    """inference_mode plus autocast at the model's precision (none for fp32 and bf16 weights)."""
    import torch
    dtype = clip.precision.autocast_dtype
    autocast = (
        torch.autocast(device_type=clip.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    )
    with torch.inference_mode(), autocast:
        yield


def _normalised(features: torch.Tensor) -> np.ndarray:
    import torch.nn.functional as F
    return F.normalize(features.float(), dim=-1).cpu().numpy()
