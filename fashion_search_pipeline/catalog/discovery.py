"""Finding complete catalog drops that have not been seen yet, with a cursor that survives restarts.

A drop is complete when its `_SUCCESS` marker exists (uploaders write it last). The cursor keeps
the greatest drop id listed so far and the drops seen incomplete, so a tick lists only drops after
the high-water mark (S3: ListObjectsV2 with StartAfter) and re-checks only the pending ones.
Drops that appear below the high-water mark later are found by the nightly full listing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Protocol

from fashion_search_pipeline.catalog.drops import (
    MARKER_FILE,
    DropLocation,
    InvalidDropIdError,
    landing_error,
    validate_drop_id,
)


class DropListing(Protocol):
    """A landing area's drop folders."""

    def drop_ids_after(self, after: str | None) -> list[str]:
        """Drop folder names greater than `after` (all when None), sorted."""

    def is_complete(self, drop_id: str) -> bool:
        """Whether the drop's _SUCCESS marker exists."""


@dataclass(frozen=True)
class DiscoveryCursor:
    """Sensor state: the high-water drop id and the drops seen without their marker."""

    high_water: str | None = None
    pending: tuple[str, ...] = ()

    def to_json(self) -> str:
        """Serialise for a Dagster sensor cursor."""
        return json.dumps({"high_water": self.high_water, "pending": list(self.pending)})

    @classmethod
    def from_json(cls, text: str | None) -> DiscoveryCursor:
        """Read a cursor written by to_json (None or empty: a fresh cursor)."""
        if not text:
            return cls()
        data = json.loads(text)
        return cls(high_water=data.get("high_water"), pending=tuple(data.get("pending", ())))


@dataclass(frozen=True)
class Discovery:
    """One discovery pass: drops ready to process, invalid drop folders, and the next cursor."""

    ready: list[str]
    invalid: dict[str, str] = field(default_factory=dict)
    cursor: DiscoveryCursor = DiscoveryCursor()


def discover_drops(listing: DropListing, cursor: DiscoveryCursor) -> Discovery:
    """Complete drops not processed yet; incomplete ones stay pending in the returned cursor."""
    listed = listing.drop_ids_after(cursor.high_water)
    invalid: dict[str, str] = {}
    candidates: list[str] = []
    for drop_id in sorted(set(cursor.pending) | set(listed)):
        try:
            candidates.append(validate_drop_id(drop_id))
        except InvalidDropIdError as error:
            invalid[drop_id] = str(error)
    ready = [drop_id for drop_id in candidates if listing.is_complete(drop_id)]
    pending = tuple(drop_id for drop_id in candidates if drop_id not in ready)
    high_water = max([*listed, cursor.high_water or ""]) or None
    return Discovery(ready=ready, invalid=invalid, cursor=DiscoveryCursor(high_water, pending))


class FolderDropListing:
    """Drops in a local landing folder."""

    def __init__(self, landing: str):
        self.landing = landing
        self.drops_dir = os.path.join(landing, "drops")

    def drop_ids_after(self, after: str | None) -> list[str]:
        if not os.path.isdir(self.drops_dir):
            return []
        with os.scandir(self.drops_dir) as entries:
            names = [e.name for e in entries if e.is_dir() and (after is None or e.name > after)]
        return sorted(names)

    def is_complete(self, drop_id: str) -> bool:
        return os.path.exists(DropLocation(self.landing, drop_id).marker_uri)


class S3DropListing:
    """Drops under s3://bucket/prefix/drops/, listed with a boto3 client (e.g. dagster-aws S3Resource)."""

    def __init__(self, client, landing_uri: str):
        bucket, _, prefix = landing_uri.removeprefix("s3://").partition("/")
        self.client = client
        self.bucket = bucket
        self.drops_prefix = f"{prefix.strip('/')}/drops/".lstrip("/")

    def drop_ids_after(self, after: str | None) -> list[str]:
        # Every key of drop `after` sorts before `<prefix>drops/<after>/` + U+10FFFF.
        start_after = f"{self.drops_prefix}{after}/\U0010ffff" if after else ""
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket, Prefix=self.drops_prefix, Delimiter="/", StartAfter=start_after
        )
        try:
            names = [
                entry["Prefix"][len(self.drops_prefix) :].rstrip("/")
                for page in pages
                for entry in page.get("CommonPrefixes", [])
            ]
        except Exception as error:  # botocore: 403, NoSuchBucket, endpoint and timeout errors
            raise landing_error(f"s3://{self.bucket}/{self.drops_prefix}", error) from error
        return sorted(name for name in names if after is None or name > after)

    def is_complete(self, drop_id: str) -> bool:
        key = f"{self.drops_prefix}{drop_id}/{MARKER_FILE}"
        try:
            response = self.client.list_objects_v2(Bucket=self.bucket, Prefix=key, MaxKeys=1)
        except Exception as error:
            raise landing_error(f"s3://{self.bucket}/{key}", error, drop_id) from error
        return any(obj["Key"] == key for obj in response.get("Contents", []))


def drop_listing(landing_uri: str, s3_client=None) -> DropListing:
    """The listing for a landing URI: S3 (needs a boto3 client) or a local folder."""
    if landing_uri.startswith("s3://"):
        if s3_client is None:
            raise ValueError(f"landing {landing_uri} is on S3: a boto3 S3 client is needed to list it")
        return S3DropListing(s3_client, landing_uri)
    return FolderDropListing(landing_uri)
