"""Publishing trained models: versioned by content, registered through `current/`, loadable by the registry."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch

from fashion_search_pipeline.models.checkpoints import TINY_CONFIG
from fashion_search_pipeline.models.loading import ModelLoadError, load_clip, open_clip_name
from fashion_search_pipeline.models.published import publish_model, read_card
from fashion_search_pipeline.models.registry import DOMAIN_MODEL, ModelSpec, load_registry


@pytest.fixture
def home(tmp_path):
    """The models root (Settings.models_dir) published models go to and the registry reads."""
    return tmp_path / "models"


def _tiny(seed: int):
    spec = ModelSpec("x", str(TINY_CONFIG), "unused.pt")
    torch.manual_seed(seed)
    model = open_clip.create_model(open_clip_name(spec), pretrained=None)
    return model, json.loads(TINY_CONFIG.read_text())


def test_untrained_domain_model_fails_with_a_hint_to_train_it(home):
    with pytest.raises(ModelLoadError, match="materialize the domain_clip asset"):
        load_clip(load_registry(models_root=home)[DOMAIN_MODEL])


def test_published_model_is_the_registered_domain_model_with_the_same_weights(home):
    model, architecture = _tiny(1)
    published = publish_model(DOMAIN_MODEL, model, architecture, {"held_out": {"mrr": 0.5}}, home)

    loaded = load_clip(load_registry(models_root=home)[DOMAIN_MODEL])

    assert loaded.version == published.version
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name
    assert read_card(DOMAIN_MODEL, home) == {"name": DOMAIN_MODEL, "version": published.version, "held_out": {"mrr": 0.5}}


def test_a_new_version_replaces_the_registered_one_and_keeps_the_old_files(home):
    first = publish_model(DOMAIN_MODEL, *_tiny(1), {}, home)
    second = publish_model(DOMAIN_MODEL, *_tiny(2), {}, home)

    assert first.version != second.version
    assert (first.version_dir / "model.pt").exists()
    assert load_clip(load_registry(models_root=home)[DOMAIN_MODEL]).version == second.version
    assert publish_model(DOMAIN_MODEL, *_tiny(2), {}, home).version == second.version, "same weights, same version"
