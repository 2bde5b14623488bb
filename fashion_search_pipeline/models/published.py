"""Trained models published into the data folder, versioned by content, with a model card.

    <home>/models/<name>/versions/<version>/model.pt, architecture.json, card.json, card.md
    <home>/models/<name>/current/...        the registered version (what the registry loads)

The version is the first 16 hex characters of the checkpoint's sha256: the same fingerprint the
loader gives a checkpoint file, so embeddings made by another version are recognised as stale.
`current/` is replaced file by file with atomic renames, weights last, only after a version is
complete: an interrupted training run leaves the previous version registered and usable.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fashion_search_pipeline.models.registry import (
    ARCHITECTURE_FILE,
    CHECKPOINT_FILE,
    ModelSpec,
    current_dir,
)

if TYPE_CHECKING:
    import torch


CARD_JSON = "card.json"
CARD_MARKDOWN = "card.md"
_VERSION_CHARS = 16
VERSIONS_DIR = "versions"


@dataclass(frozen=True)
class PublishedModel:
    """One published version and where the registry finds the current one."""

    name: str
    version: str
    version_dir: Path
    current_dir: Path

    @property
    def checkpoint(self) -> Path:
        """The registered checkpoint file."""
        return self.current_dir / CHECKPOINT_FILE


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def card_markdown(card: dict) -> str:
    """A model card a person reads: every field of `card`, nested dicts as sub-lists."""
    lines = [f"# Model card: {card.get('name', 'model')} {card.get('version', '')}".rstrip(), ""]
    for key, value in card.items():
        if isinstance(value, dict):
            lines.append(f"- **{key}**:")
            lines += [f"  - {inner}: {inner_value}" for inner, inner_value in value.items()]
        else:
            lines.append(f"- **{key}**: {value}")
    return "\n".join(lines) + "\n"


def publish_model(
    name: str, model: torch.nn.Module, architecture: dict, card: dict, root: Path
) -> PublishedModel:
    """Write a new version of model `name` under the models root `root` (Settings.models_dir) and make it
    the registered one."""
    import torch

    buffer = io.BytesIO()

    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    weights = buffer.getvalue()
    version = hashlib.sha256(weights).hexdigest()[:_VERSION_CHARS]
    card = {"name": name, "version": version, **card}
    files = {
        ARCHITECTURE_FILE: json.dumps(architecture, indent=2).encode(),
        CARD_JSON: json.dumps(card, indent=2, default=str).encode(),
        CARD_MARKDOWN: card_markdown(card).encode(),
        CHECKPOINT_FILE: weights,  # last: the registry loads the new version only once all is written
    }
    version_dir = root / name / VERSIONS_DIR / version
    current = current_dir(name, root)
    for filename, data in files.items():
        _atomic_write(version_dir / filename, data)
    for filename, data in files.items():
        _atomic_write(current / filename, data)
    return PublishedModel(name, version, version_dir, current)


def read_card(name: str, root: Path | None) -> dict | None:
    """The registered version's model card under the models root `root`, or None when the model has not
    been published there (or no root is given)."""
    path = current_dir(name, root) / CARD_JSON if root is not None else None
    return json.loads(path.read_text(encoding="utf-8")) if path is not None and path.exists() else None


def training_cards(specs: Mapping[str, ModelSpec]) -> dict[str, dict]:
    """The model cards of registered models published with one (card.json beside a local checkpoint:
    domain-clip), which record the held-out split their training used."""
    cards = {}
    for name, spec in specs.items():
        checkpoint = Path(spec.pretrained) if spec.pretrained else None
        if checkpoint is not None and checkpoint.is_file() and checkpoint.with_name(CARD_JSON).is_file():
            cards[name] = json.loads(checkpoint.with_name(CARD_JSON).read_text(encoding="utf-8"))
    return cards


def version_spec(spec: ModelSpec, version: str) -> ModelSpec | None:
    """`spec` pointed at an earlier published version of its model, or None when that version is not kept.

    Only specs that load a published model (<name>/current/model.pt) have earlier versions.
    """
    if spec.pretrained is None or Path(spec.pretrained).name != CHECKPOINT_FILE:
        return None
    current = Path(spec.pretrained).parent
    folder = current.parent / VERSIONS_DIR / version
    if current.name != "current" or not (folder / CHECKPOINT_FILE).is_file():
        return None
    return dataclasses.replace(spec, architecture=str(folder / ARCHITECTURE_FILE), pretrained=str(folder / CHECKPOINT_FILE))
