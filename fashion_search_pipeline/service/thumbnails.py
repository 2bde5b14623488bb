"""Thumbnails of catalog images: read from the image URI the tables hold (never from a request),
resized, and kept in a bounded in-memory cache keyed by item, content hash and size."""

from __future__ import annotations

import io
import threading
from collections import OrderedDict

import fsspec
from PIL import Image

from fashion_search_pipeline import config
from fashion_search_pipeline.service.uploads import decode_query_image

MIN_SIZE = 16
MAX_SIZE = 1024
DEFAULT_CACHE_BYTES = 64 * 1024 * 1024


class ThumbnailCache:
    """JPEG thumbnails, at most `max_bytes` of them in memory (least recently used dropped first)."""

    def __init__(self, s3: config.S3Settings, *, max_bytes: int = DEFAULT_CACHE_BYTES):
        self._s3 = s3
        self._max_bytes = max_bytes
        self._entries: OrderedDict[tuple, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def thumbnail(self, item_id: str, content_hash: str, image_uri: str, size: int) -> bytes:
        """The item's image as a JPEG no larger than `size` pixels on its longer side."""
        key = (item_id, content_hash, size)
        with self._lock:
            cached = self._entries.get(key)
            if cached is not None:
                self._entries.move_to_end(key)
                return cached
        data = _resized(self._read(image_uri), size)
        with self._lock:
            if key not in self._entries:
                self._entries[key] = data
                self._bytes += len(data)
            while self._bytes > self._max_bytes and self._entries:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= len(dropped)
        return data

    def _read(self, image_uri: str) -> bytes:
        with fsspec.open(image_uri, "rb", **config.storage_options_for(image_uri, self._s3)) as handle:
            return handle.read()


def _resized(data: bytes, size: int) -> bytes:
    image = decode_query_image(data)
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()
