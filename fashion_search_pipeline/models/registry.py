"""The model registry: which CLIP models exist, where their architecture and weights come from.

A registry file (YAML .yaml/.yml or TOML .toml) adds models to, or replaces, the built-in ones:

    include_defaults: true        # optional, default true
    models:
      my-model: {architecture: ./arch.json, pretrained: ./weights.pt, batch_size: 32, precision: fp32}

Relative paths in a file resolve against the file's folder.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from fashion_search_pipeline.config import MODELS_ENV, data_home

HF_HUB_PREFIX = "hf-hub:"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz", ".npy")

# Model names become LanceDB table names (<model>__<modality>) and Dagster partition keys.
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_FILE_KEYS = frozenset({"include_defaults", "models"})
_DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


class ModelRegistryError(ValueError):
    """A model definition or registry file that cannot be used."""


@dataclass(frozen=True)
class ModelSpec:
    """Where one CLIP model comes from and how to run it.

    architecture: an open_clip built-in model name ("ViT-B-32"), a path to an open_clip model-config
    JSON file (a plain model config, or a hub-style open_clip_config.json), or "hf-hub:org/name".
    pretrained: an open_clip pretrained tag ("openai"), a local checkpoint path, "hf-hub:org/name",
    or None (only with an hf-hub architecture, whose repository holds the weights).
    batch_size: images or texts per forward pass; None picks one for the device (see loading).
    """

    name: str
    architecture: str
    pretrained: str | None = None
    device: str = "auto"
    batch_size: int | None = None
    precision: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_PATTERN.fullmatch(self.name) or "__" in self.name:
            raise ModelRegistryError(
                f"model name {self.name!r} is not allowed: use 1-64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit and without '__' (it names LanceDB tables)"
            )
        if not isinstance(self.architecture, str) or not self.architecture.strip():
            raise ModelRegistryError(f"model {self.name!r}: architecture must be a non-empty string")
        if self.pretrained is not None and (not isinstance(self.pretrained, str) or not self.pretrained.strip()):
            raise ModelRegistryError(f"model {self.name!r}: pretrained must be a non-empty string or null")
        if self.pretrained is None and not self.architecture.startswith(HF_HUB_PREFIX):
            raise ModelRegistryError(
                f"model {self.name!r}: pretrained is required (a tag such as 'openai', a checkpoint path or "
                f"'hf-hub:org/name') unless the architecture is 'hf-hub:org/name'"
            )
        if not isinstance(self.device, str) or not _DEVICE_PATTERN.fullmatch(self.device):
            raise ModelRegistryError(
                f"model {self.name!r}: device {self.device!r} is not one of auto, cpu, mps, cuda, cuda:N"
            )
        if self.batch_size is not None and (
            isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1
        ):
            raise ModelRegistryError(
                f"model {self.name!r}: batch_size must be a positive integer or null, got {self.batch_size!r}"
            )
        if self.precision not in PRECISIONS:
            raise ModelRegistryError(
                f"model {self.name!r}: precision {self.precision!r} is not one of {', '.join(PRECISIONS)}"
            )


PRETRAINED_MODELS: Mapping[str, ModelSpec] = MappingProxyType(
    {
        "openai-clip": ModelSpec("openai-clip", "ViT-B-32", "openai"),
        "fashion-clip": ModelSpec("fashion-clip", "hf-hub:Marqo/marqo-fashionCLIP"),
    }
)
DOMAIN_MODEL = "domain-clip"


# Layout of a published model (see models.published): <models dir>/<name>/current/{these files}.
CHECKPOINT_FILE = "model.pt"
ARCHITECTURE_FILE = "architecture.json"


def models_dir() -> Path:
    """Where trained models are published: <home>/models."""
    return data_home() / "models"


def current_dir(name: str, root: Path | None = None) -> Path:
    """The folder holding the registered version of model `name`."""
    return (root or models_dir()) / name / "current"


def domain_model_spec() -> ModelSpec:
    """`domain-clip`: the CLIP trained on the shop's catalog, as published under <home>/models/domain-clip/current."""
    folder = current_dir(DOMAIN_MODEL)
    return ModelSpec(DOMAIN_MODEL, str(folder / ARCHITECTURE_FILE), str(folder / CHECKPOINT_FILE))


def default_models() -> dict[str, ModelSpec]:
    """The built-in models: the pretrained ones and the catalog-trained domain model."""
    return {**PRETRAINED_MODELS, DOMAIN_MODEL: domain_model_spec()}

_SPEC_KEYS = tuple(f.name for f in fields(ModelSpec) if f.name != "name")


def looks_like_path(value: str) -> bool:
    """Whether a pretrained/architecture value names a file rather than a tag or model name."""
    if value.startswith(HF_HUB_PREFIX):
        return False
    return (
        "/" in value
        or "\\" in value
        or value.startswith((".", "~"))
        or value.lower().endswith(CHECKPOINT_SUFFIXES + (".json",))
    )


def load_registry(path: str | os.PathLike | None = None) -> dict[str, ModelSpec]:
    """The models by name: from the registry file `path` (Settings.models_file), else the built-in defaults."""
    if path is None:
        return default_models()
    return _read_registry_file(Path(path).expanduser())


def _read_registry_file(path: Path) -> dict[str, ModelSpec]:
    document = _parse_file(path)
    where = str(path)
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ModelRegistryError(f"{where}: a model registry must be a mapping with a 'models' key")
    unknown = sorted(set(document) - _FILE_KEYS)
    if unknown:
        raise ModelRegistryError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))} (allowed: include_defaults, models)"
        )
    include_defaults = document.get("include_defaults", True)
    if not isinstance(include_defaults, bool):
        raise ModelRegistryError(f"{where}: include_defaults must be true or false, got {include_defaults!r}")
    models = document.get("models") or {}
    if not isinstance(models, dict):
        raise ModelRegistryError(f"{where}: 'models' must map model names to their settings")

    registry = default_models() if include_defaults else {}
    folder = path.resolve().parent
    lines = _yaml_model_lines(path) if path.suffix.lower() in (".yaml", ".yml") else {}
    for name, settings in models.items():
        at = f"{where}, line {lines[str(name)]}" if str(name) in lines else where
        registry[str(name)] = _spec_from_settings(str(name), settings, folder, at)
    return registry


def _yaml_model_lines(path: Path) -> dict[str, int]:
    """The 1-based line of each model's entry in a YAML registry file, for error messages."""
    root = yaml.compose(path.read_text(encoding="utf-8"))
    if not isinstance(root, yaml.MappingNode):
        return {}
    for key, value in root.value:
        if key.value == "models" and isinstance(value, yaml.MappingNode):
            return {str(name.value): name.start_mark.line + 1 for name, _ in value.value}
    return {}


def _parse_file(path: Path) -> Any:
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".toml"):
        raise ModelRegistryError(f"{path}: a model registry file must be .yaml, .yml or .toml (set {MODELS_ENV})")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelRegistryError(f"cannot read model registry file {path}: {exc}") from exc
    try:
        if suffix == ".toml":
            return tomllib.loads(text)
        return yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise ModelRegistryError(f"{path}: not valid {suffix.lstrip('.').upper()}: {exc}") from exc


def _spec_from_settings(name: str, settings: Any, folder: Path, where: str) -> ModelSpec:
    if not isinstance(settings, dict):
        raise ModelRegistryError(f"{where}: model {name!r}: settings must be a mapping, got {settings!r}")
    unknown = sorted(set(settings) - set(_SPEC_KEYS))
    if unknown:
        raise ModelRegistryError(
            f"{where}: model {name!r}: unknown key(s) {', '.join(map(repr, unknown))} "
            f"(allowed: {', '.join(_SPEC_KEYS)})"
        )
    if "architecture" not in settings:
        raise ModelRegistryError(f"{where}: model {name!r}: 'architecture' is required")
    values = dict(settings)
    for key in ("architecture", "pretrained"):
        value = values.get(key)
        if value is not None and not isinstance(value, str):
            raise ModelRegistryError(f"{where}: model {name!r}: {key} must be a string, got {value!r}")
        if isinstance(value, str) and looks_like_path(value):
            values[key] = str((folder / Path(value).expanduser()).resolve())
    try:
        return ModelSpec(name=name, **values)
    except ModelRegistryError as exc:
        raise ModelRegistryError(f"{where}: {exc}") from exc
