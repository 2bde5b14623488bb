"""Checking a drop's image files: every file listed with its size, hash, dimensions and whether it decodes."""

from __future__ import annotations

import hashlib
import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import polars as pl
from PIL import Image, UnidentifiedImageError

from ..columns import DROP_ID, IMAGE_PATH, IMAGE_URI
from .drops import CONTROL_FILES, DropLocation
from .storage import filesystem_for, join_uri

DEFAULT_MAX_PIXELS = 64_000_000
# Product photo formats; Pillow's other openers (EPS runs Ghostscript, for one) are not for untrusted files.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF")

MANIFEST_SCHEMA = {
    DROP_ID: pl.Utf8,
    IMAGE_PATH: pl.Utf8,
    IMAGE_URI: pl.Utf8,
    "bytes": pl.Int64,
    "sha256": pl.Utf8,
    "width": pl.Int32,
    "height": pl.Int32,
    "decodable": pl.Boolean,
    "error": pl.Utf8,
}


@dataclass
class ImageCheck:
    """What decoding an image's bytes found: its size (when the header was readable) and any error."""

    width: int | None
    height: int | None
    decodable: bool
    error: str | None


def inspect_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageCheck:
    """Fully decode `data`; report empty, truncated, oversized (decompression bomb) and non-image files.

    Only IMAGE_FORMATS count as images. Never raises for bad bytes: the
    problem is returned as `error`.
    """
    if not data:
        return ImageCheck(None, None, False, "empty file")
    try:
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except UnidentifiedImageError:
        return ImageCheck(None, None, False, f"not an image in a supported format ({', '.join(IMAGE_FORMATS)})")
    except Image.DecompressionBombError as error:
        return ImageCheck(None, None, False, f"decompression bomb: {error}")
    except Exception as error:  # any header the decoder chokes on is a bad file, not a crash
        return ImageCheck(None, None, False, f"unreadable image header: {error}")
    with image:
        width, height = image.size
        if width * height > max_pixels:
            return ImageCheck(
                width, height, False, f"decompression bomb: {width}x{height} pixels exceeds the limit of {max_pixels}"
            )
        try:
            image.load()
        except Exception as error:  # truncated or corrupt pixel data
            return ImageCheck(width, height, False, f"cannot decode {image.format or 'image'}: {error}")
    return ImageCheck(width, height, True, None)


def build_manifest(
    drop: DropLocation, storage_options: dict | None = None, *, max_workers: int = 8
) -> pl.DataFrame:
    """Every file of `drop` except its control files, read and checked on `max_workers` threads.

    Columns: drop_id, image_path (posix, relative to the drop folder),
    image_uri, bytes, sha256, width, height, decodable, error; sorted by
    image_path. A file that cannot be read or decoded is a row with its error.
    """
    fs, root = filesystem_for(drop.uri, storage_options)
    try:
        paths = fs.find(root)
    except FileNotFoundError:
        paths = []
    relative_paths = sorted(
        relative for relative in (path[len(root):].lstrip("/") for path in paths) if relative not in CONTROL_FILES
    )

    def check(relative: str) -> dict:
        row = {DROP_ID: drop.drop_id, IMAGE_PATH: relative, IMAGE_URI: join_uri(drop.uri, relative)}
        try:
            data = fs.cat_file(f"{root}/{relative}")
        except OSError as error:
            return row | {"decodable": False, "error": f"cannot read file: {error}"}
        found = inspect_image(data)
        return row | {
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "width": found.width,
            "height": found.height,
            "decodable": found.decodable,
            "error": found.error,
        }

    with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        rows = list(pool.map(check, relative_paths))
    return pl.DataFrame(rows, schema=MANIFEST_SCHEMA)
