"""Tests for models/checkpoints.py: random-weight checkpoints load through load_clip like real weights."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch

from fashion_search_pipeline.models.checkpoints import TINY_CONFIG, write_random_checkpoint
from fashion_search_pipeline.models.encoders import encode_images, encode_texts
from fashion_search_pipeline.models.loading import load_clip, open_clip_name
from fashion_search_pipeline.models.registry import ModelSpec


def build_in_memory(seed: int) -> torch.nn.Module:
    """The tiny architecture built directly with open_clip, seeded the same way."""
    name = open_clip_name(ModelSpec("reference", str(TINY_CONFIG), "unused.pt"))
    torch.manual_seed(seed)
    return open_clip.create_model(name, pretrained=None, pretrained_text=False).eval()


@pytest.mark.parametrize("filename", ["tiny.pt", "tiny.safetensors"])
def test_checkpoint_round_trip_keeps_weights_and_embeddings(tmp_path, filename):
    path = write_random_checkpoint(TINY_CONFIG, tmp_path / "nested" / filename, seed=3)
    assert path == tmp_path / "nested" / filename
    assert sorted(p.name for p in path.parent.iterdir()) == [filename], "no partial file left behind"

    clip = load_clip(ModelSpec("round-trip", str(TINY_CONFIG), str(path), device="cpu", precision="fp32"))
    reference = build_in_memory(seed=3)
    loaded_state = clip.model.state_dict()
    for key, value in reference.state_dict().items():
        assert torch.equal(loaded_state[key], value), key

    texts = ["Puma Men Ferrari Black Fleece Jacket", "red dress"]
    with torch.inference_mode():
        expected = reference.encode_text(clip.tokenizer(texts), normalize=True).numpy()
    np.testing.assert_allclose(encode_texts(clip, texts), expected, atol=1e-5)

    pixels = torch.rand(2, 3, 32, 32)
    with torch.inference_mode():
        expected_images = reference.encode_image(pixels, normalize=True).numpy()
        loaded_images = clip.model.encode_image(pixels, normalize=True).numpy()
    np.testing.assert_allclose(loaded_images, expected_images, atol=1e-6)
    assert encode_images(clip, []).shape == (0, 32)


def test_seed_decides_the_weights(tmp_path):
    first = write_random_checkpoint(TINY_CONFIG, tmp_path / "a.pt", seed=5)
    same = write_random_checkpoint(TINY_CONFIG, tmp_path / "b.pt", seed=5)
    other = write_random_checkpoint(TINY_CONFIG, tmp_path / "c.pt", seed=6)
    version = {p.name: load_clip(ModelSpec(p.stem, str(TINY_CONFIG), str(p))).version for p in (first, same, other)}
    assert version["a.pt"] == version["b.pt"] != version["c.pt"]


def test_writing_a_checkpoint_leaves_the_global_random_state_alone(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    write_random_checkpoint(TINY_CONFIG, tmp_path / "t.pt", seed=0)
    assert torch.equal(torch.rand(3), expected)
