"""Contrastive training of a CLIP on the catalog's own (image, caption) pairs.

Trains an open_clip model (the small packaged one from scratch, or a registry model being fine-tuned)
with the symmetric CLIP loss and its learnable logit scale; identical captions in a batch count as
positives of each other, and optional attribute labels add a zero-shot-style classification term.
Images are decoded once into a uint8 cache at the model's input size; each step augments and
normalises a batch of that cache. Also holds what judges such a model: a deterministic held-out
split by item, held-out text->image MRR and the MRR of a random ranking.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from fashion_search_pipeline.models.precision import (
    LAYER_PROBE_ROWS,
    MIN_SPEEDUP,
    layer_speeds,
    training_autocast,
    widest_linear,
)

if TYPE_CHECKING:
    import torch

MIN_PAIRS = 2
FREEZE_CHOICES = ("none", "image", "text")
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
CAPTION_ATTRIBUTES = ("gender", "colour", "article_type")
LABEL_ATTRIBUTES = ("colour", "article_type")
MAX_LOGIT_SCALE = math.log(100.0)
LOG_INTERVAL_SECONDS = 30.0
THREAD_PROBE_SECONDS = 60.0
STEP_PROBE_BATCH = 32

Caption = str | Sequence[str]
Log = Callable[[str], None]


@dataclass(frozen=True)
class TrainingConfig:
    """Hyper-parameters of one training run; the defaults suit the small from-scratch model on a CPU.

    freeze: "image" or "text" keeps that tower's weights (LiT-style fine-tuning). augment_images: random
    flip and crop of the cached images. augment_text_from_attributes: see training_captions.
    max_train_seconds: wall-time budget of the whole train_clip call (None: train every epoch).
    num_threads: most CPU threads (None: torch's setting); training switches to one thread while that
    measures faster. device: "auto" (CUDA when available), "cpu" or "cuda". precision: "auto" (bf16
    autocast on CUDA, fp16 with a gradient scaler where bf16 is unsupported; on a CPU bf16 autocast when
    a measured step is faster, else fp32; see models.precision), "fp32", "bf16" or "fp16" (CUDA only).
    Master weights are fp32 in every case.
    """

    epochs: int = 30
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 20
    freeze: str = "none"
    augment_images: bool = True
    augment_text_from_attributes: bool = True
    seed: int = 0
    max_train_seconds: float | None = 540.0
    num_threads: int | None = None
    device: str = "auto"
    precision: str = "auto"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainingConfig.{name} must be at least 1, got {getattr(self, name)}")
        if self.batch_size < MIN_PAIRS:
            raise ValueError(f"TrainingConfig.batch_size must be at least {MIN_PAIRS} (contrastive loss), "
                             f"got {self.batch_size}")
        if not self.learning_rate > 0:
            raise ValueError(f"TrainingConfig.learning_rate must be positive, got {self.learning_rate}")
        if self.weight_decay < 0 or self.warmup_steps < 0:
            raise ValueError("TrainingConfig.weight_decay and warmup_steps must not be negative, got "
                             f"{self.weight_decay} and {self.warmup_steps}")
        if self.max_train_seconds is not None and not self.max_train_seconds > 0:
            raise ValueError(f"TrainingConfig.max_train_seconds must be positive or None, "
                             f"got {self.max_train_seconds}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"TrainingConfig.num_threads must be at least 1 or None, got {self.num_threads}")
        for name, choices in (("freeze", FREEZE_CHOICES), ("device", DEVICE_CHOICES),
                              ("precision", PRECISION_CHOICES)):
            if getattr(self, name) not in choices:
                raise ValueError(f"TrainingConfig.{name} must be one of {choices}, got {getattr(self, name)!r}")


@dataclass
class TrainResult:
    """What a run produced: the trained model (eval mode, on the training device) and how it went."""

    model: torch.nn.Module
    epoch_losses: list[float]
    samples_per_second: float
    wall_seconds: float
    cache_seconds: float
    steps: int
    stopped_by_time_budget: bool
    device: str
    autocast_dtype: str | None
    precision: str
    precision_reason: str
    logit_scale: float


def text_with_attributes(description: str, attributes: Mapping[str, str | None]) -> str:
    """Prefix a description with its non-empty attribute values, in mapping order.

    text_with_attributes("Puma Men Ferrari Black Fleece Jacket",
    {"gender": "Men", "colour": "Black", "article_type": "Jackets"})
    == "Men Black Jackets: Puma Men Ferrari Black Fleece Jacket"
    """
    values = [str(v).strip() for v in attributes.values() if v is not None and str(v).strip()]
    if not values:
        return description
    return f"{' '.join(values)}: {description}"


def training_captions(description: str, attributes: Mapping[str, str | None],
                      config: TrainingConfig) -> list[str]:
    """The captions one item trains with; each epoch samples one of them.

    Its description and, when the config augments text from attributes: the description prefixed with
    its CAPTION_ATTRIBUTES ("Men Black Jackets: Puma Men Ferrari Black Fleece Jacket"), those
    attributes alone ("Men Black Jackets") and each LABEL_ATTRIBUTES value alone ("Black", "Jackets"),
    the texts a zero-shot label prompt looks like. Items sharing such a caption are positives of each
    other in the loss, not negatives.
    """
    captions = [description]
    if config.augment_text_from_attributes:
        prefix = {name: attributes.get(name) for name in CAPTION_ATTRIBUTES}
        prefixed = text_with_attributes(description, prefix)
        if prefixed != description:
            captions += [prefixed, prefixed.removesuffix(f": {description}")]
        captions += [str(attributes[name]).strip() for name in LABEL_ATTRIBUTES
                     if attributes.get(name) is not None and str(attributes[name]).strip()]
    return list(dict.fromkeys(captions))


def _decode(data: bytes, index: int) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data)).convert("RGB")
    except Exception as error:
        raise ValueError(f"pair {index}: image bytes do not decode ({error})") from error


def train_clip(model: torch.nn.Module, preprocess: Callable, tokenizer: Callable,
               pairs: Sequence[tuple[bytes, Caption]], config: TrainingConfig = TrainingConfig(),
               log: Log | None = None, labels: Sequence[Mapping[str, str | None]] | None = None) -> TrainResult:
    """Train model contrastively on (image bytes, caption or captions) pairs and return it.

    A pair with several captions trains on one of them per epoch, drawn at random. labels, when given,
    holds each pair's attribute labels ({"colour": "Black", "article_type": "Jackets"}): every step then
    also classifies the batch's images among all the values of each attribute by cosine to the label's
    own text, as zero-shot classification does (see label_loss). Uses CUDA with
    mixed precision when available (bf16, or fp16 with a gradient scaler), the CPU otherwise; logs
    loss, samples/s and ETA through log. With config.max_train_seconds the whole call (image decoding
    included) stays within that budget: the learning-rate schedule follows the clock as well as the
    step count, and training stops, schedule decayed, when the time is spent.
    """
    import torch
    if len(pairs) < MIN_PAIRS:
        raise ValueError(f"train_clip needs at least {MIN_PAIRS} pairs (contrastive loss), got {len(pairs)}")
    previous_threads = torch.get_num_threads()
    try:
        return _train(model, preprocess, tokenizer, pairs, labels, config, log or _silent)
    finally:
        torch.set_num_threads(previous_threads)


def _train(model: torch.nn.Module, preprocess: Callable, tokenizer: Callable,
           pairs: Sequence[tuple[bytes, Caption]], labels: Sequence[Mapping[str, str | None]] | None,
           config: TrainingConfig, report: Log) -> TrainResult:
    import torch
    started = time.perf_counter()
    device = _resolve_device(config.device)
    model.to(device=device, dtype=torch.float32).train()  # fp32 master weights, whatever precision
    if config.freeze == "image":
        model.lock_image_tower()
        model.visual.eval()  # batch-norm statistics stay as they are too, the module types unchanged
    elif config.freeze == "text":
        model.lock_text_tower()
    autocast_name, precision_reason = training_autocast(
        config.precision, device, lambda: _bf16_step_speedup(model, tokenizer, config.batch_size, device))
    autocast_dtype = getattr(torch, {"bf16": "bfloat16", "fp16": "float16"}[autocast_name]) if autocast_name else None
    generator = torch.Generator().manual_seed(config.seed)

    mean, std = _normalization(preprocess)
    cache = _image_cache(pairs, preprocess, mean, std, report)
    captions = [_captions_of(text, index) for index, (_, text) in enumerate(pairs)]
    flat = [caption for group in captions for caption in group]
    distinct = {caption: index for index, caption in enumerate(dict.fromkeys(flat))}
    caption_ids = torch.tensor([distinct[caption] for caption in flat])
    label_sets = _label_sets(labels, len(pairs), distinct)
    tokens = tokenizer(list(distinct))
    offsets = torch.tensor(np.cumsum([0] + [len(group) for group in captions[:-1]]))
    counts = torch.tensor([len(group) for group in captions])
    cache_seconds = time.perf_counter() - started
    label_summary = ", ".join(f"{label_set.attribute} ({len(label_set.text_ids)})" for label_set in label_sets)
    report(f"cached {len(pairs)} images {tuple(cache.shape[1:])} and {len(distinct)} distinct texts "
           f"in {cache_seconds:.1f}s; labels: {label_summary or 'none'}; training on {device} at {precision_reason}")

    optimizer = torch.optim.AdamW(_parameter_groups(model, config.weight_decay), lr=config.learning_rate)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)
    n = len(pairs)
    batches_per_epoch = min(math.ceil(n / config.batch_size), n // MIN_PAIRS)
    total_steps = config.epochs * batches_per_epoch
    warmup = min(config.warmup_steps, total_steps - 1)
    # the budget bounds the whole call: what decoding took comes off the time left for steps
    budget = None if config.max_train_seconds is None else max(1e-3, config.max_train_seconds - cache_seconds)
    threads = _ThreadChooser(config.num_threads or torch.get_num_threads(), device.type == "cpu", report)
    mean, std = mean.to(device), std.to(device)

    epoch_losses: list[float] = []
    step = samples = 0
    out_of_time = False
    train_started = last_log = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        order = torch.randperm(n, generator=generator)
        choice = offsets + (torch.rand(n, generator=generator) * counts).long()
        losses = []
        for index, batch in enumerate(torch.tensor_split(order, batches_per_epoch)):
            step_started = time.perf_counter()
            progress = max(step / total_steps, (step_started - train_started) / budget if budget else 0.0)
            lr = config.learning_rate * _lr_factor(step, warmup, progress, warmup / total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            pixels = cache[batch].to(device, non_blocking=True).float()
            if config.augment_images:
                pixels = _augment(pixels, generator)
            pixels = (pixels / 255.0 - mean) / std
            used = threads.before_step(step)
            loss = _step(model, optimizer, scaler, autocast_dtype, pixels, tokens, caption_ids[choice[batch]],
                         [(s.text_ids, s.targets[batch]) for s in label_sets])
            if not math.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss} at epoch {epoch}, step {step + 1}; "
                                         "lower the learning rate")
            losses.append(loss)
            step += 1
            samples += len(batch)
            now = time.perf_counter()
            threads.after_step(used, (now - step_started) / len(batch))
            out_of_time = budget is not None and now - train_started >= budget
            if out_of_time:
                break
            if now - last_log >= LOG_INTERVAL_SECONDS and index < batches_per_epoch - 1:
                report(_progress(epoch, config.epochs, step, total_steps, losses, samples, now - train_started,
                                 budget, lr, model))
                last_log = now
        epoch_losses.append(float(np.mean(losses)))
        now = last_log = time.perf_counter()
        report(_progress(epoch, config.epochs, step, total_steps, losses, samples, now - train_started,
                         budget, lr, model))
        if out_of_time:
            report(f"time budget of {config.max_train_seconds:.0f}s spent: stopping after {step}/{total_steps} "
                   "steps (the learning-rate schedule followed the clock, so it has decayed)")
            break

    train_seconds = time.perf_counter() - train_started
    model.eval()
    wall = time.perf_counter() - started
    report(f"trained {step} steps in {wall:.1f}s ({samples / train_seconds:.1f} samples/s), "
           f"final loss {epoch_losses[-1]:.4f}")
    return TrainResult(
        model=model,
        epoch_losses=epoch_losses,
        samples_per_second=samples / train_seconds,
        wall_seconds=wall,
        cache_seconds=cache_seconds,
        steps=step,
        stopped_by_time_budget=out_of_time,
        device=str(device),
        autocast_dtype=str(autocast_dtype).removeprefix("torch.") if autocast_dtype else None,
        precision=f"{autocast_name} autocast" if autocast_name else "fp32",
        precision_reason=precision_reason,
        logit_scale=model.logit_scale.exp().item(),
    )


def _step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
          autocast_dtype: torch.dtype | None, pixels: torch.Tensor, tokens: torch.Tensor,
          caption_ids: torch.Tensor, label_batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """One optimisation step on a batch; returns its loss."""
    import torch
    device = pixels.device
    # every text the step needs (the batch's captions, each label set) is encoded once, even when shared
    needed = torch.cat([caption_ids, *(text_ids for text_ids, _ in label_batches)])
    unique, inverse = torch.unique(needed, return_inverse=True)
    with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        image_features = model.encode_image(pixels, normalize=True).float()
        text_features = model.encode_text(tokens[unique].to(device), normalize=True).float()[inverse.to(device)]
        scale = model.logit_scale.exp().float()
        batch = len(caption_ids)
        loss = contrastive_loss(image_features, text_features[:batch], scale, caption_ids.to(device))
        start = batch
        for text_ids, targets in label_batches:
            label_features = text_features[start:start + len(text_ids)]
            start += len(text_ids)
            loss = loss + label_loss(image_features, label_features, scale, targets.to(device)) / len(label_batches)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    with torch.no_grad():
        model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
    return loss.item()


@dataclass(frozen=True)
class _LabelSet:
    attribute: str
    text_ids: torch.Tensor  # (values,): each value's index among the distinct texts
    targets: torch.Tensor  # (pairs,): each pair's value index, -1 where it has none


def _label_sets(labels: Sequence[Mapping[str, str | None]] | None, n: int,
                distinct: dict[str, int]) -> list[_LabelSet]:
    """One label set per attribute with at least two values; adds the values' texts to distinct."""
    import torch
    if labels is None:
        return []
    if len(labels) != n:
        raise ValueError(f"train_clip got {len(labels)} label mappings for {n} pairs")
    cleaned = [{name: str(value).strip() for name, value in row.items() if value is not None and str(value).strip()}
               for row in labels]
    sets = []
    for attribute in sorted({name for row in cleaned for name in row}):
        values = sorted({row[attribute] for row in cleaned if attribute in row})
        if len(values) < 2:
            continue
        for value in values:
            distinct.setdefault(value, len(distinct))
        index = {value: position for position, value in enumerate(values)}
        sets.append(_LabelSet(attribute, torch.tensor([distinct[value] for value in values]),
                              torch.tensor([index.get(row.get(attribute), -1) for row in cleaned])))
    return sets


class _ThreadChooser:
    """Chooses, by measuring, between the allowed CPU threads and a single one, again every
    THREAD_PROBE_SECONDS: on an oversubscribed CPU, OpenMP threads spin-wait for each other at every
    barrier and one thread can train several times faster than two."""

    def __init__(self, most: int, enabled: bool, report: Log):
        import torch
        self.most = most
        self.enabled = enabled and most > 1
        self.report = report
        self.chosen = most
        self.trial: dict[int, float] | None = None
        self.next_probe = 0.0
        torch.set_num_threads(most)

    def before_step(self, step: int) -> int:
        """Set and return the thread count for this step (the first step only warms up)."""
        import torch
        if self.enabled and self.trial is None and step > 0 and time.perf_counter() >= self.next_probe:
            self.trial = {}
        threads = self.chosen if self.trial is None else (self.most, 1)[len(self.trial)]
        torch.set_num_threads(threads)
        return threads

    def after_step(self, threads: int, seconds_per_sample: float) -> None:
        """Record a probe's timing; once both counts ran, keep the faster."""
        if self.trial is None:
            return
        self.trial[threads] = seconds_per_sample
        if len(self.trial) < 2:
            return
        faster = min(self.trial, key=self.trial.__getitem__)
        if faster != self.chosen:
            self.report(f"using {faster} CPU thread{'s' if faster > 1 else ''}: {1 / self.trial[faster]:.1f} "
                        f"samples/s against {1 / self.trial[self.chosen]:.1f} with {self.chosen}")
        self.chosen = faster
        self.trial = None
        self.next_probe = time.perf_counter() + THREAD_PROBE_SECONDS


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                     caption_ids: torch.Tensor) -> torch.Tensor:
    """Symmetric CLIP (InfoNCE) loss over a batch of L2-normalised features, in which pairs whose
    captions are identical (same caption_ids) are positives of each other rather than negatives.

    The targets' entropy is subtracted, so the loss is 0 when every positive gets its share; with all
    captions distinct this is exactly the standard CLIP loss.
    """
    import torch
    import torch.nn.functional as F
    logits = logit_scale * image_features @ text_features.T
    same = (caption_ids[:, None] == caption_ids[None, :]).float()
    targets = same / same.sum(dim=1, keepdim=True)
    entropy = -torch.special.xlogy(targets, targets).sum(dim=1).mean()
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2 - entropy


def label_loss(image_features: torch.Tensor, label_features: torch.Tensor, logit_scale: torch.Tensor,
               targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of classifying each image among an attribute's label texts by scaled cosine,
    the zero-shot rule; images whose target is -1 (no label) are left out (0 when none has one)."""
    import torch.nn.functional as F
    known = targets >= 0
    if not bool(known.any()):
        return image_features.sum() * 0.0
    return F.cross_entropy(logit_scale * image_features[known] @ label_features.T, targets[known])


def _progress(epoch: int, epochs: int, step: int, total_steps: int, losses: list[float], samples: int,
              elapsed: float, budget: float | None, lr: float, model: torch.nn.Module) -> str:
    eta = elapsed / step * (total_steps - step)
    if budget is not None:
        eta = max(0.0, min(eta, budget - elapsed))
    return (f"epoch {epoch}/{epochs} step {step}/{total_steps} loss {np.mean(losses):.4f} lr {lr:.2e} "
            f"scale {model.logit_scale.exp().item():.1f} {samples / elapsed:.1f} samples/s "
            f"ETA {int(eta // 60)}m{int(eta % 60):02d}s")


def _captions_of(text: Caption, index: int) -> list[str]:
    group = [text] if isinstance(text, str) else list(text)
    if not group:
        raise ValueError(f"pair {index} has no caption")
    return group


def _silent(message: str) -> None:
    """The log of a caller that wants none."""


def _resolve_device(name: str) -> torch.device:
    import torch
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("TrainingConfig.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


def _bf16_step_speedup(model: torch.nn.Module, tokenizer: Callable, batch_size: int, device: torch.device) -> float:
    """Speed of a bf16-autocast training step over an fp32 one (forward and backward on random inputs).

    The widest layer's matmul decides first, in milliseconds: where bf16 is emulated the model never
    runs in it. The model's weights, gradients and batch-norm statistics are left as they were.
    """
    import torch
    layer = widest_linear(model)
    if layer is not None:
        fp32, bf16 = layer_speeds(layer, LAYER_PROBE_ROWS)
        if bf16 / fp32 < MIN_SPEEDUP:
            return bf16 / fp32
    size = model.visual.preprocess_cfg["size"]
    side = int(size if isinstance(size, int) else max(size))
    rows = min(batch_size, STEP_PROBE_BATCH)
    pixels = torch.randn(rows, 3, side, side, generator=torch.Generator().manual_seed(0)).to(device)
    tokens = tokenizer(["a photo of a product"] * rows).to(device)
    buffers = {name: value.clone() for name, value in model.named_buffers()}

    def step(dtype: torch.dtype | None) -> float:
        started = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model.encode_image(pixels).float().sum() + model.encode_text(tokens).float().sum()
        loss.backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - started

    step(torch.bfloat16)  # warm-up of both at the measured batch
    step(None)
    fp32 = min(step(None), step(None))
    bf16 = min(step(torch.bfloat16), step(torch.bfloat16))
    with torch.no_grad():
        for name, value in model.named_buffers():
            value.copy_(buffers[name])
    return fp32 / bf16


def _normalization(preprocess: Callable) -> tuple[torch.Tensor, torch.Tensor]:
    import torch
    from torchvision.transforms import Normalize
    for transform in getattr(preprocess, "transforms", []):
        if isinstance(transform, Normalize):
            return (torch.tensor(transform.mean, dtype=torch.float32).view(1, 3, 1, 1),
                    torch.tensor(transform.std, dtype=torch.float32).view(1, 3, 1, 1))
    raise ValueError("preprocess must be a torchvision Compose that ends in Normalize, as open_clip builds it")


def _image_cache(pairs: Sequence[tuple[bytes, Caption]], preprocess: Callable, mean: torch.Tensor,
                 std: torch.Tensor, report: Log) -> torch.Tensor:
    """Every pair's image through preprocess, de-normalised back to uint8 (n, 3, height, width)."""
    import torch
    cache: torch.Tensor | None = None
    for index, (data, _) in enumerate(pairs):
        pixels = preprocess(_decode(data, index))
        if cache is None:
            cache = torch.empty((len(pairs), *pixels.shape), dtype=torch.uint8)
        cache[index] = ((pixels * std[0] + mean[0]) * 255.0).round_().clamp_(0, 255).to(torch.uint8)
        if (index + 1) % 500 == 0:
            report(f"decoded {index + 1}/{len(pairs)} images")
    return cache


def _augment(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and a random crop of 80-100% of the side, resized back, per image
    (float pixels in 0-255, on any device; the randomness comes from the CPU generator)."""
    import torch
    import torch.nn.functional as F
    n = pixels.shape[0]
    scale = 0.8 + 0.2 * torch.rand(n, generator=generator)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    shift = (1.0 - scale) * (2.0 * torch.rand(2, n, generator=generator) - 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = scale * flip
    theta[:, 1, 1] = scale
    theta[:, 0, 2] = shift[0]
    theta[:, 1, 2] = shift[1]
    grid = F.affine_grid(theta.to(pixels.device), list(pixels.shape), align_corners=False)
    return F.grid_sample(pixels, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only: not on gains, biases, embeddings' positions or the logit scale."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        exempt = parameter.ndim < 2 or "logit_" in name or "positional_embedding" in name or "bias" in name
        (no_decay if exempt else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lr_factor(step: int, warmup: int, progress: float, warmup_progress: float) -> float:
    """Linear warmup over the first steps, then a cosine from 1 to 0 over the rest of progress (0..1)."""
    if step < warmup:
        return (step + 1) / warmup
    remaining = (progress - warmup_progress) / max(1e-9, 1.0 - warmup_progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, remaining))))
