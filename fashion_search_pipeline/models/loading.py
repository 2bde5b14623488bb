"""Turn a ModelSpec into a ready open_clip model: architecture, weights, preprocess, tokenizer, device.

Everything is resolved to local files before open_clip builds the model, so a local source never
touches the network, and a hub source is looked up in the Hugging Face cache first and otherwise
downloaded only after one quick reachability check (open_clip's own download path retries for
about a minute when the hub cannot be reached).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import constants as hub_constants
from huggingface_hub import get_session, hf_hub_download, try_to_load_from_cache

from fashion_search_pipeline.config import MODELS_ENV
from fashion_search_pipeline.models.precision import (
    Precision,
    PrecisionChoice,
    inference_precision,
    probe_bf16,
)
from fashion_search_pipeline.models.registry import DOMAIN_MODEL, HF_HUB_PREFIX, ModelSpec, looks_like_path

if TYPE_CHECKING:
    import torch

HUB_CONFIG_FILE = "open_clip_config.json"
HUB_WEIGHTS_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
HUB_PROBE_TIMEOUT_S = 3.0
CPU_BATCH_SIZE = 64
GPU_BATCH_SIZE = 256
_FINGERPRINT_CHARS = 16
_PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode", "fill_color")

logger = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """A registered model that cannot be loaded; the message says how to use a local copy instead."""

    def __init__(self, spec: ModelSpec, reason: str, *, hub_repo: str | None = None, weights_file: str | None = None):
        self.spec = spec
        self.reason = reason
        super().__init__(_load_error_message(spec, reason, hub_repo, weights_file or HUB_WEIGHTS_FILES[1]))


@dataclass
class LoadedClip:
    """An open_clip model ready to encode, with everything needed to feed it."""

    spec: ModelSpec
    model: torch.nn.Module
    preprocess: Callable
    tokenizer: Callable
    device: torch.device
    precision_choice: PrecisionChoice
    embed_dim: int
    version: str
    batch_size: int

    @property
    def precision(self) -> Precision:
        """The weights' dtype and the autocast dtype the encoders run this model at."""
        return self.precision_choice.precision


@dataclass(frozen=True)
class _Architecture:
    """An architecture as open_clip's factory can build it offline."""

    open_clip_name: str
    label: str
    config: dict[str, Any]
    preprocess: dict[str, Any] = field(default_factory=dict)
    hub_repo: str | None = None


_loaded: dict[ModelSpec, tuple[tuple, LoadedClip]] = {}
_load_lock = threading.Lock()
_fingerprints: dict[tuple[str, int, int], str] = {}
_config_lock = threading.Lock()


def load_clip(spec: ModelSpec) -> LoadedClip:
    """Load (once per process) the model `spec` describes, in eval mode on its device.

    The cache is keyed by the spec and by the checkpoint file's size and mtime, so a checkpoint
    rewritten in place is loaded again.
    """
    with _load_lock:
        stamp = _file_stamp(spec.pretrained)
        cached = _loaded.get(spec)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        clip = _load_uncached(spec)
        _loaded[spec] = (stamp, clip)
        return clip


def open_clip_name(spec: ModelSpec) -> str:
    """The name under which open_clip's factory builds spec.architecture (config files get registered)."""
    return _resolve_architecture(spec).open_clip_name


def default_batch_size(device: torch.device) -> int:
    """Batch size for a model whose registry entry sets none.

    On a CPU, 64 images already keep every core busy and bigger batches only hold more memory; a
    GPU needs larger batches to amortise kernel launches and host-to-device copies.
    """
    return GPU_BATCH_SIZE if device.type == "cuda" else CPU_BATCH_SIZE


def _load_uncached(spec: ModelSpec) -> LoadedClip:
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2
    if spec.name == DOMAIN_MODEL and spec.pretrained and not Path(spec.pretrained).is_file():
        raise ModelLoadError(
            spec, "it has not been trained here yet: materialize the domain_clip asset (or run `fashion-search demo`)"
        )
    device = _device_for(spec)
    architecture = _resolve_architecture(spec)
    checkpoint, tag_cfg = _resolve_checkpoint(spec, architecture)
    preprocess_overrides = {
        key: value
        for key, value in {**architecture.preprocess, **tag_cfg}.items()
        if key in _PREPROCESS_KEYS
    }
    try:
        model = open_clip.create_model(
            architecture.open_clip_name,
            pretrained=checkpoint,
            device=device,
            pretrained_text=False,
            force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
            force_preprocess_cfg=preprocess_overrides,
        )
        tokenizer = open_clip.get_tokenizer(architecture.open_clip_name)
    except Exception as exc:  # open_clip/torch raise many types for bad configs and checkpoints
        raise ModelLoadError(
            spec, f"open_clip could not build {architecture.label} from checkpoint {checkpoint}: {exc}"
        ) from exc
    preprocess = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
    model.eval()
    version = _version(spec, architecture, checkpoint)
    choice = _precision_for(spec, model, tokenizer, device, version)
    if choice.precision.weights != "fp32":
        model.to(choice.precision.weights_dtype)  # converted once, here
    return LoadedClip(
        spec=spec,
        model=model,
        preprocess=preprocess,
        tokenizer=tokenizer,
        device=device,
        precision_choice=choice,
        embed_dim=int(architecture.config["embed_dim"]),
        version=version,
        batch_size=spec.batch_size or default_batch_size(device),
    )


def _precision_for(spec: ModelSpec, model: torch.nn.Module, tokenizer: Callable, device: torch.device,
                   version: str) -> PrecisionChoice:
    """The spec's precision setting resolved on this device, measuring the model where `auto` needs it."""
    size = model.visual.preprocess_cfg["size"]
    side = int(size if isinstance(size, int) else max(size))
    key = (open_clip_name(spec), version, str(device))
    choice = inference_precision(spec.precision, device, lambda: probe_bf16(model, tokenizer, side, key=key))
    logger.log(logging.WARNING if choice.warning else logging.INFO, "model %r runs at %s", spec.name, choice.reason)
    return choice


def _device_for(spec: ModelSpec) -> torch.device:
    import torch
    if spec.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(spec, f"device {spec.device!r} was requested but CUDA is not available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError(spec, f"device {spec.device!r} was requested but MPS is not available")
    return device


# ---- architecture ---------------------------------------------------------------------------


def _resolve_architecture(spec: ModelSpec) -> _Architecture:
    import open_clip
    architecture = spec.architecture
    if architecture.startswith(HF_HUB_PREFIX):
        repo = _hub_repo(spec, architecture)
        config_file = Path(_hub_file(spec, repo, (HUB_CONFIG_FILE,)))
        resolved = _architecture_from_file(spec, config_file, stem=repo.split("/")[-1])
        return _Architecture(resolved.open_clip_name, architecture, resolved.config, resolved.preprocess, repo)
    if looks_like_path(architecture):
        return _architecture_from_file(spec, Path(architecture).expanduser())
    config = open_clip.get_model_config(architecture)
    if config is None:
        raise ModelLoadError(
            spec,
            f"architecture {architecture!r} is neither an open_clip built-in model, a model-config JSON file "
            "nor 'hf-hub:org/name'",
        )
    return _Architecture(architecture, architecture, config)


def _architecture_from_file(spec: ModelSpec, path: Path, *, stem: str | None = None) -> _Architecture:
    """A plain open_clip model config, or a hub-style open_clip_config.json (model_cfg + preprocess_cfg)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelLoadError(spec, f"architecture file {path} does not exist") from exc
    except (OSError, ValueError) as exc:
        raise ModelLoadError(spec, f"architecture file {path} is not readable JSON: {exc}") from exc
    hub_style = isinstance(document, dict) and "model_cfg" in document
    config = document["model_cfg"] if hub_style else document
    preprocess = document.get("preprocess_cfg", {}) if hub_style else {}
    if not isinstance(config, dict) or not all(key in config for key in ("embed_dim", "vision_cfg", "text_cfg")):
        raise ModelLoadError(
            spec, f"architecture file {path} is not an open_clip model config (needs embed_dim, vision_cfg, text_cfg)"
        )
    return _Architecture(_register_config(stem or path.stem, config), str(path), config, dict(preprocess))


def _register_config(stem: str, config: dict[str, Any]) -> str:
    """Register a model config with open_clip under a name unique to its content, and return the name.

    open_clip knows configs by file name in a global table; naming each by content hash means two
    files that share a name never shadow each other (or a built-in) and an edited file is new. open_clip
    reads the file when it is added and keeps the config, so the file lives only for that call (a
    process killed later leaves nothing behind; later rescans skip the missing path).
    """
    import open_clip
    text = json.dumps(config, sort_keys=True)
    name = f"{stem}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
    with _config_lock:
        if open_clip.get_model_config(name) is None:
            with tempfile.TemporaryDirectory(prefix="fsp-open-clip-config-") as folder:
                config_file = Path(folder) / f"{name}.json"
                config_file.write_text(text, encoding="utf-8")
                open_clip.add_model_config(config_file)
    return name


# ---- weights ----------------------------------------------------------------------------------


def _resolve_checkpoint(spec: ModelSpec, architecture: _Architecture) -> tuple[str, dict[str, Any]]:
    """The local checkpoint file for the spec, and the pretrained tag's settings (empty for files)."""
    import open_clip
    pretrained = spec.pretrained
    if pretrained is None:
        return _hub_file(spec, architecture.hub_repo, HUB_WEIGHTS_FILES), {}
    if pretrained.startswith(HF_HUB_PREFIX):
        repo, filenames = _hub_weights_location(spec, pretrained)
        return _hub_file(spec, repo, filenames), {}
    if looks_like_path(pretrained):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise ModelLoadError(spec, f"checkpoint file {path} does not exist")
        return str(path), {}
    tag_cfg = open_clip.get_pretrained_cfg(architecture.open_clip_name, pretrained)
    if not tag_cfg:
        known = open_clip.list_pretrained_tags_by_model(architecture.open_clip_name)
        raise ModelLoadError(
            spec,
            f"pretrained {pretrained!r} is neither a checkpoint path nor an open_clip tag of "
            f"{architecture.label} (known tags: {', '.join(known) or 'none'})",
        )
    hf_hub = tag_cfg["hf_hub"]
    if hf_hub.endswith("/"):
        repo, filenames = hf_hub.rstrip("/"), HUB_WEIGHTS_FILES
    else:
        repo, filename = os.path.split(hf_hub)
        filenames = _safetensors_first(filename)
    return _hub_file(spec, repo, filenames), tag_cfg


def _hub_repo(spec: ModelSpec, reference: str) -> str:
    repo = reference[len(HF_HUB_PREFIX):].strip("/")
    if repo.count("/") != 1:
        raise ModelLoadError(spec, f"{reference!r} is not of the form 'hf-hub:org/name'")
    return repo


def _hub_weights_location(spec: ModelSpec, reference: str) -> tuple[str, tuple[str, ...]]:
    parts = reference[len(HF_HUB_PREFIX):].strip("/").split("/")
    if len(parts) == 2:
        return "/".join(parts), HUB_WEIGHTS_FILES
    if len(parts) >= 3:
        return "/".join(parts[:2]), _safetensors_first("/".join(parts[2:]))
    raise ModelLoadError(spec, f"{reference!r} is not of the form 'hf-hub:org/name[/file]'")


def _safetensors_first(filename: str) -> tuple[str, ...]:
    """The file, preceded by its .safetensors twin when it is a pickle (as open_clip prefers)."""
    if filename == HUB_WEIGHTS_FILES[1]:
        return HUB_WEIGHTS_FILES
    stem, suffix = os.path.splitext(filename)
    if suffix in (".bin", ".pth"):
        return (f"{stem}.safetensors", filename)
    return (filename,)


def _hub_file(spec: ModelSpec, repo: str | None, filenames: tuple[str, ...]) -> str:
    """The first of `filenames` in the hub repo: from the local cache, else downloaded."""
    assert repo is not None, "only an hf-hub architecture may leave pretrained unset"
    for filename in filenames:
        cached = try_to_load_from_cache(repo, filename)
        if isinstance(cached, str):
            return cached
    weights_file = filenames[-1] if filenames != (HUB_CONFIG_FILE,) else None
    unreachable = _hub_unreachable_reason()
    if unreachable:
        raise ModelLoadError(
            spec,
            f"{repo} is not in the local Hugging Face cache and {unreachable}",
            hub_repo=repo,
            weights_file=weights_file,
        )
    errors = []
    for filename in filenames:
        try:
            return hf_hub_download(repo, filename)
        except Exception as exc:  # huggingface_hub raises its own hierarchy plus httpx errors
            errors.append(f"{filename}: {exc}")
    raise ModelLoadError(
        spec, f"could not download from {repo}: {'; '.join(errors)}", hub_repo=repo, weights_file=weights_file
    )


def _hub_unreachable_reason() -> str | None:
    """None when the Hugging Face Hub answers within a few seconds, else why it does not."""
    if hub_constants.is_offline_mode():
        return "HF_HUB_OFFLINE is set"
    endpoint = hub_constants.ENDPOINT
    try:
        get_session().head(endpoint, timeout=HUB_PROBE_TIMEOUT_S)
    except Exception as exc:  # any transport failure means "not reachable from here"
        return f"the hub ({endpoint}) is not reachable: {exc}"
    return None


# ---- version ----------------------------------------------------------------------------------


def _version(spec: ModelSpec, architecture: _Architecture, checkpoint: str) -> str:
    pretrained = spec.pretrained
    if pretrained is not None and looks_like_path(pretrained):
        return checkpoint_fingerprint(checkpoint)
    if pretrained is None:
        return architecture.label
    label = Path(architecture.label).stem if looks_like_path(architecture.label) else architecture.label
    return f"{label}/{pretrained}"


def checkpoint_fingerprint(path: str | os.PathLike) -> str:
    """First 16 hex chars of the file's sha256, cached by (path, size, mtime)."""
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    fingerprint = _fingerprints.get(key)
    if fingerprint is None:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        fingerprint = digest.hexdigest()[:_FINGERPRINT_CHARS]
        _fingerprints[key] = fingerprint
    return fingerprint


def _file_stamp(pretrained: str | None) -> tuple:
    if pretrained is None or not looks_like_path(pretrained):
        return ()
    try:
        stat = os.stat(Path(pretrained).expanduser())
    except OSError:
        return ()
    return (stat.st_size, stat.st_mtime_ns)


# ---- error message ----------------------------------------------------------------------------


def _load_error_message(spec: ModelSpec, reason: str, hub_repo: str | None, weights_file: str) -> str:
    source = spec.architecture if spec.pretrained is None else f"{spec.architecture} + {spec.pretrained}"
    hub_architecture = spec.architecture.startswith(HF_HUB_PREFIX)
    lines = [f"cannot load model {spec.name!r} ({source}): {reason}.", ""]
    if hub_repo:
        files = [HUB_CONFIG_FILE, weights_file] if hub_architecture and spec.pretrained is None else [weights_file]
        lines.append(
            f"To use a local copy: download {' and '.join(files)} from https://huggingface.co/{hub_repo} "
            "on a machine with network access into a folder (here ./weights),"
        )
    else:
        lines.append("To use a local copy: save the model's weights to a file (here ./weights/...),")
    lines += [
        "list the model in a registry file (relative paths resolve against the file's folder), e.g. models.yaml:",
        "",
        "    models:",
        f"      {spec.name}:",
        f"        architecture: {_local_architecture_hint(spec)}",
        f"        pretrained: ./weights/{weights_file}",
        "",
        f"and set {MODELS_ENV}=/path/to/models.yaml.",
    ]
    return "\n".join(lines)


def _local_architecture_hint(spec: ModelSpec) -> str:
    """The architecture to pair with a local copy of the weights (a tag's QuickGELU must be kept)."""
    import open_clip
    if spec.architecture.startswith(HF_HUB_PREFIX):
        return f"./weights/{HUB_CONFIG_FILE}"
    pretrained = spec.pretrained or ""
    if looks_like_path(pretrained) or pretrained.startswith(HF_HUB_PREFIX):
        return spec.architecture
    quick_gelu_variant = f"{spec.architecture}-quickgelu"
    tag_cfg = open_clip.get_pretrained_cfg(spec.architecture, pretrained)
    if tag_cfg.get("quick_gelu") and quick_gelu_variant in open_clip.list_models():
        return quick_gelu_variant
    return spec.architecture
