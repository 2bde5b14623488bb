"""Folders of random JPEGs and catalogs over them, for the tests of the embedding step (local and Ray)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

from fashion_search_pipeline import columns as C

COLOURS = ("Red", "Navy", "Olive", "Black", "Pink")


def write_random_jpegs(folder: Path, count: int, size: tuple[int, int]) -> list[Path]:
    """`count` seeded random-noise JPEGs of `size` (height, width) named 000.jpg, 001.jpg, ... in `folder`."""
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        path = folder / f"{index:03d}.jpg"
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path, "JPEG")
        paths.append(path)
    return paths


def catalog_of(paths: list[Path]) -> pl.DataFrame:
    """A catalog with one item per image file: ids from the file stems, descriptions of varied length."""
    return pl.DataFrame({
        C.ITEM_ID: [f"item-{path.stem}" for path in paths],
        C.DROP_ID: ["2026-11-01"] * len(paths),
        C.IMAGE_URI: [str(path) for path in paths],
        C.DESCRIPTION: [f"{COLOURS[i % 5]} shirt " + "with long sleeves " * (i % 7) for i in range(len(paths))],
        C.CONTENT_HASH: [hashlib.sha256(path.name.encode()).hexdigest() for path in paths],
        "colour": [COLOURS[i % 5] for i in range(len(paths))],
    })


def read_bytes(uri: str) -> bytes:
    """The image reader both engines get: a local file's bytes."""
    return Path(uri).read_bytes()
