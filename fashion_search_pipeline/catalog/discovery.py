"""Finding complete catalog drops that have not been seen yet, with a cursor that survives restarts.

A drop is complete when its `_SUCCESS` marker exists (uploaders write it last). The cursor keeps
the greatest drop id listed so far and the drops seen incomplete, so a tick lists only drops after
the high-water mark (S3: ListObjectsV2 with StartAfter) and re-checks only the pending ones.
Drops that appear below the high-water mark later are found by the nightly full listing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from fashion_search_pipeline.catalog.drops import DropListing, InvalidDropIdError, validate_drop_id


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
