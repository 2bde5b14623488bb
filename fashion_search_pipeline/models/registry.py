"""The model registry: which CLIP models exist, where their architecture and weights come from.

A registry file (YAML .yaml/.yml or TOML .toml) adds models to, or replaces, the built-in ones
(openai-clip, fashion-clip, and domain-clip as published under the models root, Settings.models_dir):

    include_defaults: true        # optional, default true
    models:
      my-model: {architecture: ./arch.json, pretrained: ./weights.pt, batch_size: 32, precision: fp32}

Relative paths in a file resolve against the file's folder. The code location serves the last good
copy of a file that stops loading (load_registry_or_last_good).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from fashion_search_pipeline.config import MODELS_ENV

logger = logging.getLogger(__name__)

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


def current_dir(name: str, models_root: Path) -> Path:
    """The folder holding the registered version of model `name` (models_root: Settings.models_dir)."""
    return Path(models_root) / name / "current"


def domain_model_spec(models_root: Path) -> ModelSpec:
    """`domain-clip`: the CLIP trained on the shop's catalog, as published under <models_root>/domain-clip/current."""
    folder = current_dir(DOMAIN_MODEL, models_root)
    return ModelSpec(DOMAIN_MODEL, str(folder / ARCHITECTURE_FILE), str(folder / CHECKPOINT_FILE))


def default_models(models_root: Path) -> dict[str, ModelSpec]:
    """The built-in models: the pretrained ones and the catalog-trained domain model under `models_root`."""
    return {**PRETRAINED_MODELS, DOMAIN_MODEL: domain_model_spec(models_root)}


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


def load_registry(path: str | os.PathLike | None = None, *, models_root: Path | None = None) -> dict[str, ModelSpec]:
    """The models by name: from the registry file `path` (Settings.models_file), else the built-in defaults.

    `models_root` (Settings.models_dir) is where the built-in domain-clip is published: required
    whenever the built-in models are included (no file, or a file without `include_defaults: false`).
    """
    if path is None:
        return default_models(_required_root(models_root, "the built-in models"))
    return _read_registry_file(Path(path).expanduser(), models_root)


def _required_root(models_root: Path | None, what: str) -> Path:
    if models_root is None:
        raise ValueError(f"{what} include domain-clip: pass models_root (Settings.models_dir), where it is published")
    return Path(models_root)


def _read_registry_file(path: Path, models_root: Path | None) -> dict[str, ModelSpec]:
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

    registry = default_models(_required_root(models_root, f"{path} (include_defaults: true)")) if include_defaults else {}
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
    except yaml.YAMLError as exc:
        raise ModelRegistryError(_yaml_problem(path, exc)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ModelRegistryError(f"{path}: not valid TOML: {exc}") from exc


def _yaml_problem(path: Path, exc: yaml.YAMLError) -> str:
    """One line naming the file, the line (yaml's problem_mark) and the problem."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{path}, line {mark.line + 1}" if mark is not None else str(path)
    problem = ": ".join(str(part) for part in (getattr(exc, "context", None), getattr(exc, "problem", None)) if part)
    return f"{where}: not valid YAML: {problem or exc}"


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


# The code location keeps a copy of the last registry file that loaded (Settings.last_good_models_file)
# and serves it while that file does not load, e.g. after an edit with a typo while `dagster dev` runs.
_LAST_GOOD_HEADER = "# last good copy of: "


@dataclass(frozen=True)
class ServedRegistry:
    """The registry the code location serves: its models, the file steps re-read them from, and the
    configured file's problem while its last good copy is served instead (None when it loads)."""

    specs: dict[str, ModelSpec]
    models_file: str | None
    problem: str | None = None


def load_registry_or_last_good(
    path: str | os.PathLike | None, *, models_root: Path | None, last_good: Path
) -> ServedRegistry:
    """The registry file `path` when it loads (its models are then copied to `last_good`); when it does
    not, the last good copy of that same file and the one-line problem; with no copy, the file's
    ModelRegistryError (naming the file and line)."""
    if path is None:
        return ServedRegistry(load_registry(models_root=models_root), None)
    source = str(Path(path).expanduser().resolve())
    try:
        specs = load_registry(path, models_root=models_root)
    except ModelRegistryError as problem:
        if _last_good_source(last_good) != source:
            raise
        try:
            specs = load_registry(last_good, models_root=models_root)
        except ModelRegistryError:
            raise problem from None
        saved = datetime.fromtimestamp(last_good.stat().st_mtime, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return ServedRegistry(specs, str(last_good), f"{problem}; serving the last good registry from {saved} ({last_good})")
    try:
        _keep_last_good(source, specs, last_good)
    except OSError as error:  # the registry itself loaded: serve it, without a fallback copy
        logger.warning("could not keep a last good copy of %s at %s: %s", source, last_good, error)
    return ServedRegistry(specs, str(path))


def served_specs(path: str | os.PathLike | None, *, models_root: Path, last_good: Path | None) -> dict[str, ModelSpec]:
    """The registry a running code location serves: the file, or while it does not load, its last good
    copy (see load_registry_or_last_good); without `last_good`, the file only."""
    if last_good is None:
        return load_registry(path, models_root=models_root)
    return load_registry_or_last_good(path, models_root=models_root, last_good=last_good).specs


def _last_good_source(last_good: Path) -> str | None:
    """The registry file `last_good` is a copy of (its first line), or None without a copy."""
    try:
        with last_good.open(encoding="utf-8") as file:
            first = file.readline().rstrip("\n")
    except OSError:
        return None
    return first[len(_LAST_GOOD_HEADER):] if first.startswith(_LAST_GOOD_HEADER) else None


def _keep_last_good(source: str, specs: Mapping[str, ModelSpec], last_good: Path) -> None:
    """Write `specs` as a self-contained registry file (absolute paths, no defaults) when it changed."""
    models = {name: {key: getattr(spec, key) for key in _SPEC_KEYS} for name, spec in specs.items()}
    text = (
        f"{_LAST_GOOD_HEADER}{source}\n"
        "# Written by the code location each time that file loads; served while it does not. Do not edit.\n"
        + yaml.safe_dump({"include_defaults": False, "models": models}, sort_keys=False)
    )
    try:
        if last_good.read_text(encoding="utf-8") == text:
            return
    except OSError:
        pass
    last_good.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=last_good.parent, prefix=f".{last_good.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, last_good)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
