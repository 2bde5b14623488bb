"""Tests for models/registry.py: built-in defaults, YAML and TOML registry files, validation."""

from __future__ import annotations

import pytest

from fashion_search_pipeline.config import MODELS_ENV, Settings
from fashion_search_pipeline.models.registry import (
    PRETRAINED_MODELS,
    ModelRegistryError,
    ModelSpec,
    default_models,
    load_registry,
    looks_like_path,
)


def test_defaults_without_a_file(tmp_path):
    registry = load_registry(models_root=tmp_path / "models")
    current = tmp_path / "models" / "domain-clip" / "current"
    assert registry == {
        "openai-clip": ModelSpec("openai-clip", "ViT-B-32", "openai"),
        "fashion-clip": ModelSpec("fashion-clip", "hf-hub:Marqo/marqo-fashionCLIP"),
        "domain-clip": ModelSpec("domain-clip", str(current / "architecture.json"), str(current / "model.pt")),
    }
    registry.pop("openai-clip")
    assert "openai-clip" in PRETRAINED_MODELS, "callers get a copy, the defaults stay intact"


def test_the_built_in_models_need_the_models_root_and_a_file_without_them_does_not(tmp_path):
    with pytest.raises(ValueError, match="pass models_root"):
        load_registry()
    path = tmp_path / "models.yaml"
    path.write_text("models:\n  m: {architecture: ViT-B-32, pretrained: openai}\n")
    with pytest.raises(ValueError, match=r"models.yaml \(include_defaults: true\) include domain-clip"):
        load_registry(path)
    path.write_text("include_defaults: false\nmodels:\n  m: {architecture: ViT-B-32, pretrained: openai}\n")
    assert load_registry(path) == {"m": ModelSpec("m", "ViT-B-32", "openai")}


def test_yaml_file_resolves_relative_paths_against_its_folder(tmp_path, monkeypatch):
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "models.yaml").write_text(
        "models:\n"
        "  my-model: {architecture: ./arch/tiny.json, pretrained: weights/tiny.pt, batch_size: 32, precision: fp32}\n"
        "  openai-clip: {architecture: ViT-B-32, pretrained: openai, device: cpu}\n"
        "  hub-model: {architecture: 'hf-hub:org/name'}\n"
    )
    monkeypatch.chdir(tmp_path)  # relative to the file, not to the working directory
    registry = load_registry("conf/models.yaml", models_root=tmp_path / "models")
    assert registry["my-model"] == ModelSpec(
        "my-model",
        str(folder.resolve() / "arch" / "tiny.json"),
        str(folder.resolve() / "weights" / "tiny.pt"),
        batch_size=32,
        precision="fp32",
    )
    assert registry["openai-clip"] == ModelSpec("openai-clip", "ViT-B-32", "openai", device="cpu")
    assert registry["hub-model"].pretrained is None
    assert registry["hub-model"].architecture == "hf-hub:org/name"
    assert registry["fashion-clip"] == PRETRAINED_MODELS["fashion-clip"]


def test_toml_file_from_the_environment_variable(tmp_path):
    path = tmp_path / "models.toml"
    path.write_text(
        "include_defaults = false\n"
        "[models.domain-clip]\n"
        'architecture = "arch.json"\n'
        'pretrained = "/abs/domain.safetensors"\n'
        "batch_size = 16\n"
    )
    settings = Settings.from_env({MODELS_ENV: str(path)})
    assert load_registry(settings.models_file) == {
        "domain-clip": ModelSpec(
            "domain-clip", str(tmp_path.resolve() / "arch.json"), "/abs/domain.safetensors", batch_size=16
        )
    }


def test_home_relative_paths_are_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    path = tmp_path / "models.yml"
    path.write_text("models:\n  m: {architecture: ViT-B-32, pretrained: ~/w.pt}\n")
    assert load_registry(path, models_root=tmp_path)["m"].pretrained == str(tmp_path.resolve() / "w.pt")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            "models:\n  m1: {architecture: ViT-B-32, pretrained: openai, batchsize: 3}\n",
            "model 'm1': unknown key(s) 'batchsize'",
        ),
        (
            "models:\n  m2: {architecture: ViT-B-32, pretrained: openai, precision: int8}\n",
            "model 'm2': precision 'int8'",
        ),
        ("models:\n  m3: {architecture: ViT-B-32, pretrained: openai, batch_size: 0}\n", "model 'm3': batch_size"),
        ("models:\n  m4: {architecture: ViT-B-32, pretrained: openai, batch_size: true}\n", "model 'm4': batch_size"),
        ("models:\n  m5: {pretrained: openai}\n", "model 'm5': 'architecture' is required"),
        ("models:\n  m6: {architecture: ViT-B-32}\n", "model 'm6': pretrained is required"),
        ("models:\n  m7: {architecture: ViT-B-32, pretrained: openai, device: gpu}\n", "model 'm7': device 'gpu'"),
        ("models:\n  m8: {architecture: 5, pretrained: openai}\n", "model 'm8': architecture must be a string"),
        ("models:\n  m8: ViT-B-32\n", "model 'm8': settings must be a mapping"),
        ("models:\n  bad__name: {architecture: ViT-B-32, pretrained: openai}\n", "'bad__name' is not allowed"),
        ("models:\n  'a b': {architecture: ViT-B-32, pretrained: openai}\n", "'a b' is not allowed"),
        ("model:\n  m: {architecture: ViT-B-32, pretrained: openai}\n", "unknown key(s) 'model'"),
        ("include_defaults: 'no'\n", "include_defaults must be true or false"),
        ("models: [a, b]\n", "'models' must map model names"),
        ("- just\n- a list\n", "must be a mapping"),
        ("models: {m: [unclosed\n", "models.yaml, line 2: not valid YAML: while parsing a flow sequence: expected"),
        ("models:\n  m: {architecture: ViT-B-32\n  pretrained: openai}\n  - x\n", "models.yaml, line 3: not valid YAML"),
    ],
)
def test_bad_files_get_errors_naming_file_and_model(tmp_path, content, expected):
    path = tmp_path / "models.yaml"
    path.write_text(content)
    with pytest.raises(ModelRegistryError) as raised:
        load_registry(path, models_root=tmp_path)
    assert expected in str(raised.value)
    assert str(path) in str(raised.value)
    assert "\n" not in str(raised.value), "one line"


def test_bad_toml_and_unreadable_files(tmp_path):
    bad_toml = tmp_path / "models.toml"
    bad_toml.write_text("[models.m\n")
    with pytest.raises(ModelRegistryError, match="not valid TOML"):
        load_registry(bad_toml, models_root=tmp_path)
    with pytest.raises(ModelRegistryError, match="cannot read model registry file .*missing.yaml"):
        load_registry(tmp_path / "missing.yaml", models_root=tmp_path)
    with pytest.raises(ModelRegistryError, match=r"must be \.yaml, \.yml or \.toml"):
        load_registry(tmp_path / "models.json", models_root=tmp_path)


def test_empty_file_means_only_the_defaults(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text("")
    assert load_registry(path, models_root=tmp_path) == default_models(tmp_path)


def test_spec_validates_when_built_in_code():
    with pytest.raises(ModelRegistryError, match="model 'x': precision 'fp8'"):
        ModelSpec("x", "ViT-B-32", "openai", precision="fp8")
    assert ModelSpec("x", "hf-hub:org/name").pretrained is None


@pytest.mark.parametrize(
    ("value", "is_path"),
    [
        ("openai", False),
        ("laion2b_s34b_b79k", False),
        ("hf-hub:org/name", False),
        ("ViT-B-32", False),
        ("weights.pt", True),
        ("model.safetensors", True),
        ("arch.json", True),
        ("./x", True),
        ("~/x", True),
        ("dir/file", True),
    ],
)
def test_paths_are_told_from_tags(value, is_path):
    assert looks_like_path(value) is is_path
