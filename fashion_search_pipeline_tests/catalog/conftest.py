"""Builders for catalog drops and image files used across the catalog tests."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from fashion_search_pipeline.catalog.drops import CAPTIONS_FILE, MARKER_FILE, DropLocation

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
REAL_DROPS = SHARED_DATA / "fashion-catalog" / "drops"


def image_bytes(image_format: str = "JPEG", size: tuple[int, int] = (16, 12), color=(200, 30, 30)) -> bytes:
    """A small real image file."""
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=image_format)
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A PNG of a few dozen bytes whose header declares width x height pixels (a decompression bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def truncated_jpeg() -> bytes:
    """A 64x64 JPEG cut off halfway through its pixel data."""
    pattern = Image.frombytes("RGB", (64, 64), bytes((i * 7919) % 251 for i in range(64 * 64 * 3)))
    buffer = io.BytesIO()
    pattern.save(buffer, format="JPEG", quality=95)
    data = buffer.getvalue()
    return data[: len(data) // 2]


def write_drop(
    landing: Path, drop_id: str, captions: str | bytes | None, files: dict[str, bytes] | None = None, *, marker=True
) -> DropLocation:
    """Write a drop folder under `landing` and return its location."""
    folder = landing / "drops" / drop_id
    folder.mkdir(parents=True, exist_ok=True)
    if captions is not None:
        (folder / CAPTIONS_FILE).write_bytes(captions.encode() if isinstance(captions, str) else captions)
    for relative, data in (files or {}).items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(data)
    if marker:
        (folder / MARKER_FILE).write_bytes(b"")
    return DropLocation(str(landing), drop_id)


@pytest.fixture
def real_first_drop() -> DropLocation:
    """The first real catalog drop of ../shared/data (skips when the data is absent)."""
    if not (REAL_DROPS / "2026-11-01" / CAPTIONS_FILE).is_file():
        pytest.skip(f"real catalog data not found at {REAL_DROPS}")
    return DropLocation(str(REAL_DROPS.parent), "2026-11-01")
