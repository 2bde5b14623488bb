"""Whether a registered model's architecture and weights can be found here, without loading it.

The embedding automation asks this every tick for every model, so it only looks at files: a
local checkpoint exists, a hub repository is in the Hugging Face cache, or the hub answers (then
the weights can be downloaded on first load). Nothing here builds a model; open_clip (and with
it torch) is imported only to map an open_clip pretrained tag ("openai") to its hub repository.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fashion_search_pipeline.config import MODELS_ENV
from fashion_search_pipeline.models.registry import (
    DOMAIN_MODEL,
    HF_HUB_PREFIX,
    ModelSpec,
    looks_like_path,
)

HUB_WEIGHTS_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
HUB_CONFIG_FILE = "open_clip_config.json"
HUB_PROBE_TIMEOUT_S = 3.0
# A hub probe is a network round trip; the automation sensor asks every 30 s.
HUB_PROBE_TTL_S = 300.0

_probe: tuple[float, str | None] | None = None


@dataclass(frozen=True)
class Availability:
    """A model's status here: available, or the reason it is not and how to fix it."""

    model: str
    reason: str | None = None
    fix: str | None = None

    @property
    def available(self) -> bool:
        """True when the model's files can be found (or downloaded)."""
        return self.reason is None

    def describe(self) -> str:
        """One line a person reads: 'available' or 'unavailable: <reason> (fix: ...)'."""
        if self.available:
            return "available"
        return f"unavailable: {self.reason}" + (f" (fix: {self.fix})" if self.fix else "")


def availability(spec: ModelSpec, *, hub_reachable: bool | None = None) -> Availability:
    """Whether `spec`'s architecture and weights are here. hub_reachable: None probes the hub."""
    missing = _missing_local_file(spec)
    if missing is not None or not _uses_hub(spec):
        return missing or Availability(spec.name)
    unreachable = _hub_unreachable_reason() if hub_reachable is None else (None if hub_reachable else "offline")
    if unreachable is None:
        return Availability(spec.name)
    absent = list(dict.fromkeys(repo for repo, files in _hub_repositories(spec) if not _in_hub_cache(repo, files)))
    if not absent:
        return Availability(spec.name)
    return Availability(
        spec.name,
        reason=f"its weights ({', '.join(absent)} on the Hugging Face Hub) are not in the local cache "
        f"and the hub cannot be reached ({unreachable})",
        fix=f"copy the weights into a folder and list them as a local `pretrained` file in the registry "
        f"file ({MODELS_ENV}); `fashion-search materialize --model {spec.name}` prints the exact steps",
    )


def _uses_hub(spec: ModelSpec) -> bool:
    pretrained = spec.pretrained
    return spec.architecture.startswith(HF_HUB_PREFIX) or (pretrained is not None and not looks_like_path(pretrained))


def registry_availability(specs: Mapping[str, ModelSpec]) -> dict[str, Availability]:
    """The availability of every model of a registry, by name (the hub is probed at most once)."""
    return {name: availability(spec) for name, spec in sorted(specs.items())}


def _missing_local_file(spec: ModelSpec) -> Availability | None:
    for key in ("architecture", "pretrained"):
        value = getattr(spec, key)
        if value is None or not looks_like_path(value) or Path(value).expanduser().is_file():
            continue
        if spec.name == DOMAIN_MODEL:
            return Availability(
                spec.name,
                reason="it has not been trained here yet",
                fix="materialize the domain_clip asset (Dagster UI, or `fashion-search demo`)",
            )
        return Availability(
            spec.name,
            reason=f"{key} file {value} does not exist",
            fix=f"put the file there, or point `{key}` of model {spec.name!r} in the registry file at it",
        )
    return None


def _hub_repositories(spec: ModelSpec) -> list[tuple[str, tuple[str, ...]]]:
    """(repository, files any one of which must be cached) for every hub source of the spec."""
    repos = []
    if spec.architecture.startswith(HF_HUB_PREFIX):
        repo = spec.architecture[len(HF_HUB_PREFIX):].strip("/")
        repos.append((repo, (HUB_CONFIG_FILE,)))
        if spec.pretrained is None:
            repos.append((repo, HUB_WEIGHTS_FILES))
    pretrained = spec.pretrained
    if pretrained is not None and pretrained.startswith(HF_HUB_PREFIX):
        parts = pretrained[len(HF_HUB_PREFIX):].strip("/").split("/")
        repos.append(("/".join(parts[:2]), (parts[-1],) if len(parts) > 2 else HUB_WEIGHTS_FILES))
    elif pretrained is not None and not looks_like_path(pretrained):
        repos.append(_tag_repository(spec))
    return repos


def _tag_repository(spec: ModelSpec) -> tuple[str, tuple[str, ...]]:
    """The hub repository and weights files behind an open_clip pretrained tag ("openai")."""
    import open_clip  # only for models given by a tag: open_clip holds the tag -> repository table

    hf_hub = (open_clip.get_pretrained_cfg(spec.architecture, spec.pretrained) or {}).get("hf_hub", "")
    parts = hf_hub.rstrip("/").split("/")
    if len(parts) > 2:
        return "/".join(parts[:2]), ("/".join(parts[2:]),)
    return "/".join(parts) or f"open_clip tag {spec.pretrained}", HUB_WEIGHTS_FILES


def _in_hub_cache(repo: str, files: tuple[str, ...]) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo, name), str) for name in files)


def _hub_unreachable_reason() -> str | None:
    """None when the Hugging Face Hub answers within a few seconds (cached HUB_PROBE_TTL_S), else why not."""
    global _probe
    if _probe is not None and time.monotonic() - _probe[0] < HUB_PROBE_TTL_S:
        return _probe[1]
    from huggingface_hub import constants, get_session

    if constants.is_offline_mode():
        reason = "HF_HUB_OFFLINE is set"
    else:
        try:
            get_session().head(constants.ENDPOINT, timeout=HUB_PROBE_TIMEOUT_S)
            reason = None
        except Exception as exc:  # any transport failure means "not reachable from here"
            reason = f"{constants.ENDPOINT} is not reachable: {type(exc).__name__}"
    _probe = (time.monotonic(), reason)
    return reason
