"""Tests for models/loading.py: real checkpoints on disk, a real (local) Hugging Face cache, no network."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil

import huggingface_hub
import open_clip
import pytest
import torch

from fashion_search_pipeline.config import MODELS_ENV
from fashion_search_pipeline.models.checkpoints import TINY_CONFIG, write_random_checkpoint
from fashion_search_pipeline.models.encoders import encode_texts
from fashion_search_pipeline.models.loading import (
    ModelLoadError,
    checkpoint_fingerprint,
    default_batch_size,
    load_clip,
)
from fashion_search_pipeline.models.registry import PRETRAINED_MODELS, ModelSpec


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """The Hugging Face Hub as on a machine without network: offline mode and an empty local cache."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def put_in_hub_cache(cache, repo, files: dict):
    """Lay files out the way huggingface_hub caches a downloaded repository revision."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_folder = cache / f"models--{repo.replace('/', '--')}"
    (repo_folder / "refs").mkdir(parents=True)
    (repo_folder / "refs" / "main").write_text(commit)
    snapshot = repo_folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, source in files.items():
        shutil.copyfile(source, snapshot / name)


def test_load_clip_reads_the_checkpoint_into_an_eval_model(tiny_loaded_clip, tiny_model_spec):
    clip = tiny_loaded_clip
    assert clip.spec == tiny_model_spec
    assert clip.device == torch.device("cpu")
    assert clip.precision.label == "fp32" and clip.precision_choice.reason == "fp32: set in the registry"
    assert clip.embed_dim == 32
    assert not clip.model.training
    expected_version = hashlib.sha256(open(tiny_model_spec.pretrained, "rb").read()).hexdigest()[:16]
    assert clip.version == expected_version == checkpoint_fingerprint(tiny_model_spec.pretrained)
    assert clip.tokenizer(["a red dress"]).shape == (1, 77)
    assert clip.preprocess.transforms[0].size == 32


def test_load_clip_is_cached_per_spec_and_checkpoint_file(tmp_path):
    path = write_random_checkpoint(TINY_CONFIG, tmp_path / "model.pt", seed=1)
    spec = ModelSpec("cached", str(TINY_CONFIG), str(path), device="cpu")
    first = load_clip(spec)
    assert load_clip(spec) is first
    assert load_clip(ModelSpec("cached", str(TINY_CONFIG), str(path), device="cpu")) is first

    write_random_checkpoint(TINY_CONFIG, path, seed=2)  # retrained in place
    second = load_clip(spec)
    assert second is not first
    assert second.version != first.version
    assert not torch.equal(
        second.model.token_embedding.weight, first.model.token_embedding.weight
    ), "the new weights were loaded"


def test_missing_checkpoint_names_the_model_and_how_to_fix_it(tmp_path):
    spec = ModelSpec("lost-model", str(TINY_CONFIG), str(tmp_path / "gone.pt"))
    with pytest.raises(ModelLoadError) as raised:
        load_clip(spec)
    message = str(raised.value)
    assert "'lost-model'" in message
    assert str(tmp_path / "gone.pt") in message
    assert MODELS_ENV in message
    assert "models:\n      lost-model:\n" in message


def test_corrupt_checkpoint_and_bad_architecture_are_load_errors(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="'garbled'.*garbage.pt"):
        load_clip(ModelSpec("garbled", str(TINY_CONFIG), str(garbage)))

    weights = write_random_checkpoint(TINY_CONFIG, tmp_path / "tiny.pt")
    with pytest.raises(ModelLoadError, match="'no-arch'.*nowhere.json does not exist"):
        load_clip(ModelSpec("no-arch", str(tmp_path / "nowhere.json"), str(weights)))
    not_a_config = tmp_path / "settings.json"
    not_a_config.write_text('{"hello": 1}')
    with pytest.raises(ModelLoadError, match="'odd-arch'.*not an open_clip model config"):
        load_clip(ModelSpec("odd-arch", str(not_a_config), str(weights)))
    with pytest.raises(ModelLoadError, match="'typo'.*'ViT-Q-99' is neither"):
        load_clip(ModelSpec("typo", "ViT-Q-99", str(weights)))
    wider = tmp_path / "fsp-tiny-wider.json"
    wider.write_text(json.dumps({**json.loads(TINY_CONFIG.read_text()), "embed_dim": 48}))
    with pytest.raises(ModelLoadError, match="'wrong-weights'.*could not build"):
        load_clip(ModelSpec("wrong-weights", str(wider), str(weights)))


def test_unknown_pretrained_tag_lists_the_known_ones():
    with pytest.raises(ModelLoadError, match="'tagged'.*'openia'.*known tags: openai, laion400m_e31"):
        load_clip(ModelSpec("tagged", "ViT-B-32", "openia"))


@pytest.mark.parametrize("name", sorted(PRETRAINED_MODELS))
def test_default_models_fail_fast_and_clearly_when_the_hub_is_out_of_reach(offline_hub, name):
    with pytest.raises(ModelLoadError) as raised:
        load_clip(PRETRAINED_MODELS[name])
    message = str(raised.value)
    assert f"cannot load model '{name}'" in message
    assert "HF_HUB_OFFLINE" in message
    assert "https://huggingface.co/" in message
    assert MODELS_ENV in message
    if name == "openai-clip":
        # the local copy must keep the tag's QuickGELU activation
        assert "architecture: ViT-B-32-quickgelu" in message
    else:
        assert "architecture: ./weights/open_clip_config.json" in message


def test_hub_model_loads_from_the_local_cache_without_network(offline_hub, tiny_model_spec, tiny_loaded_clip, tmp_path):
    hub_config = tmp_path / "open_clip_config.json"
    hub_config.write_text(
        json.dumps(
            {
                "model_cfg": json.loads(TINY_CONFIG.read_text()),
                "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
            }
        )
    )
    put_in_hub_cache(
        offline_hub,
        "fsp-test/tiny-clip",
        {"open_clip_config.json": hub_config, "open_clip_pytorch_model.bin": tiny_model_spec.pretrained},
    )
    clip = load_clip(ModelSpec("hub-tiny", "hf-hub:fsp-test/tiny-clip", device="cpu", precision="fp32"))
    assert clip.version == "hf-hub:fsp-test/tiny-clip"
    normalize = clip.preprocess.transforms[-1]
    assert list(normalize.mean) == [0.5, 0.5, 0.5]
    assert list(normalize.std) == [0.25, 0.25, 0.25]
    texts = ["navy blue backpack", "white sneakers"]
    assert encode_texts(clip, texts) == pytest.approx(encode_texts(tiny_loaded_clip, texts), abs=1e-6)

    # the same files downloaded by hand and listed by path
    local = load_clip(ModelSpec("hub-files", str(hub_config), tiny_model_spec.pretrained, device="cpu"))
    assert list(local.preprocess.transforms[-1].mean) == [0.5, 0.5, 0.5]
    assert local.version == checkpoint_fingerprint(tiny_model_spec.pretrained)


def test_config_file_named_like_a_builtin_does_not_shadow_it(tmp_path, tiny_model_spec):
    impostor = tmp_path / "ViT-B-32.json"
    impostor.write_text(TINY_CONFIG.read_text())
    builtin = open_clip.get_model_config("ViT-B-32")
    clip = load_clip(ModelSpec("impostor", str(impostor), tiny_model_spec.pretrained, device="cpu"))
    assert clip.embed_dim == 32
    assert open_clip.get_model_config("ViT-B-32") == builtin


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device_is_a_load_error(tiny_model_spec):
    spec = ModelSpec("gpu-model", tiny_model_spec.architecture, tiny_model_spec.pretrained, device="cuda")
    with pytest.raises(ModelLoadError, match="'gpu-model'.*CUDA is not available"):
        load_clip(spec)


def test_batch_size_comes_from_the_registry_or_the_device(tiny_model_spec):
    assert load_clip(tiny_model_spec).batch_size == default_batch_size(torch.device("cpu")) == 64
    assert load_clip(dataclasses.replace(tiny_model_spec, batch_size=8)).batch_size == 8
    assert default_batch_size(torch.device("cuda")) == 256
