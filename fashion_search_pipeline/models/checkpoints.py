"""Checkpoint files that load_clip reads like real weights: random-weight models for tests and demos."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from fashion_search_pipeline.models.loading import open_clip_name
from fashion_search_pipeline.models.registry import ModelSpec

if TYPE_CHECKING:
    pass

TINY_CONFIG = Path(__file__).resolve().parent / "configs" / "fsp-tiny.json"
# The small architecture domain-clip trains from scratch offline (a ModifiedResNet at 64 px).
SMALL_CONFIG = Path(__file__).resolve().parent / "configs" / "fsp-small.json"


def write_random_checkpoint(architecture: str | Path, path: Path, *, seed: int = 0) -> Path:
    """Build `architecture` with random weights (seeded) and save them where load_clip can read them.

    A .safetensors path writes safetensors, anything else a torch state dict. The same seed gives the
    same bytes, and the file is replaced atomically, so a reader never sees half a checkpoint.
    """
    import open_clip
    import torch
    from safetensors.torch import save_file
    path = Path(path)
    spec = ModelSpec("random-weights", str(architecture), pretrained=str(path))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model(open_clip_name(spec), pretrained=None, pretrained_text=False)
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    if path.suffix == ".safetensors":
        save_file(state, str(partial))
    else:
        with open(partial, "wb") as handle:  # a handle, not a path: the archive then does not embed the file name
            torch.save(state, handle)
    os.replace(partial, path)
    return path
