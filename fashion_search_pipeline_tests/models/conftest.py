"""Fixtures for the models tests: a tiny open_clip model with random weights, saved and loaded for real."""

from __future__ import annotations

import pytest

from fashion_search_pipeline.models.checkpoints import TINY_CONFIG, write_random_checkpoint
from fashion_search_pipeline.models.loading import LoadedClip, load_clip
from fashion_search_pipeline.models.registry import ModelSpec


@pytest.fixture(scope="session")
def tiny_model_spec(tmp_path_factory) -> ModelSpec:
    """A ModelSpec for the tiny test architecture whose random weights (seed 0) sit in a checkpoint file."""
    checkpoint = write_random_checkpoint(TINY_CONFIG, tmp_path_factory.mktemp("tiny-model") / "fsp-tiny.pt")
    return ModelSpec("fsp-tiny", str(TINY_CONFIG), pretrained=str(checkpoint), device="cpu", precision="fp32")


@pytest.fixture(scope="session")
def tiny_loaded_clip(tiny_model_spec) -> LoadedClip:
    """The tiny model loaded through load_clip (fp32 on CPU)."""
    return load_clip(tiny_model_spec)
