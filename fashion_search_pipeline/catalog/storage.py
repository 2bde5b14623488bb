"""Addressing files by URI: local folders and s3:// alike, through fsspec."""

from __future__ import annotations

import fsspec

_LOCAL_PROTOCOLS = ("file", "local")


def filesystem_for(uri: str, storage_options: dict | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem that holds `uri` and the path of `uri` inside it.

    Remote listings are never cached, so a listing always sees objects that
    landed since the last one.
    """
    options = dict(storage_options or {})
    protocol = fsspec.utils.get_protocol(uri)
    if protocol not in _LOCAL_PROTOCOLS:
        options.setdefault("use_listings_cache", False)
    fs, path = fsspec.core.url_to_fs(uri, **options)
    return fs, path.rstrip("/") or path


def join_uri(uri: str, *parts: str) -> str:
    """`uri` with `parts` appended, separated by single slashes."""
    pieces = [uri.rstrip("/")] + [p.strip("/") for p in parts if p.strip("/")]
    return "/".join(pieces)
