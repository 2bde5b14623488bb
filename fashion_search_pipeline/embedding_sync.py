"""Bring one LanceDB embedding table (one model, one modality) in line with the catalog.

Only items whose (content hash, model version) the table does not hold yet are embedded;
items gone from the catalog are removed. Batches stream from storage through the encoder
into LanceDB: image files are read ahead on threads, and commits run on a background thread
while the encoder works. Memory stays bounded by the batch and commit sizes, not the catalog.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import polars as pl
import pyarrow as pa

from fashion_search_pipeline import columns as C
from fashion_search_pipeline.models.encoders import encode_texts, iter_image_batches
from fashion_search_pipeline.models.loading import LoadedClip
from fashion_search_pipeline.store import tables
from fashion_search_pipeline.store.keyword import keyword_texts

# A merge-insert costs about 40 ms whether it holds 64 rows or 1,024 (a commit, a new fragment):
# 20,000 rows take 11.7 s in 64-row commits and 0.3 s in 4,096-row ones. So fast encoders (a GPU)
# commit this many rows at a time...
WRITE_ROWS = 4_096
# ...and slow ones at least this often, so progress is saved and logged as it goes.
WRITE_INTERVAL_S = 10.0
# Image files read ahead of the encoder, in encoder batches, and the threads reading them.
READ_AHEAD_BATCHES = 2
READ_WORKERS = 8


@dataclass(frozen=True)
class EmbeddingPlan:
    """What a sync has to do: rows to embed and item ids to remove."""

    to_embed: pl.DataFrame
    to_remove: list[str]
    up_to_date: int


@dataclass(frozen=True)
class EmbeddingSyncReport:
    """What a sync did, for run metadata and logs."""

    table: str
    catalog_items: int
    embedded: int
    skipped: int
    removed: int
    rows_after: int
    seconds: float
    removal_withheld: str | None = None  # why rows of items gone from the catalog were kept

    @property
    def items_per_second(self) -> float:
        """Embedding throughput of this sync (0 when nothing was embedded)."""
        return self.embedded / self.seconds if self.embedded and self.seconds > 0 else 0.0


def plan_embedding_sync(catalog: pl.DataFrame, existing: pl.DataFrame, model_version: str) -> EmbeddingPlan:
    """Compare the catalog with a table's (item_id, content_hash, model_version) keys."""
    current = existing.filter(pl.col(C.MODEL_VERSION) == model_version).select(C.ITEM_ID, C.CONTENT_HASH)
    to_embed = catalog.join(current, on=[C.ITEM_ID, C.CONTENT_HASH], how="anti")
    gone = existing.join(catalog.select(C.ITEM_ID), on=C.ITEM_ID, how="anti")
    return EmbeddingPlan(
        to_embed=to_embed.sort(C.ITEM_ID),
        to_remove=sorted(gone[C.ITEM_ID].to_list()),
        up_to_date=catalog.height - to_embed.height,
    )


def embedding_rows(items: pl.DataFrame, vectors: np.ndarray, clip: LoadedClip) -> pa.Table:
    """The LanceDB rows for `items` and their vectors (one row per item, same order)."""
    attributes = C.attribute_columns(items.columns)
    schema = tables.embedding_schema(clip.embed_dim, attributes)
    attribute_values = items.select(attributes).iter_rows() if attributes else ((),) * items.height
    attribute_json = [
        json.dumps({k: v for k, v in zip(attributes, values) if v is not None}, ensure_ascii=False)
        for values in attribute_values
    ]
    data = {
        C.ITEM_ID: items[C.ITEM_ID].to_list(),
        C.DROP_ID: items[C.DROP_ID].to_list(),
        C.IMAGE_URI: items[C.IMAGE_URI].to_list(),
        C.DESCRIPTION: items[C.DESCRIPTION].to_list(),
        C.CONTENT_HASH: items[C.CONTENT_HASH].to_list(),
        C.MODEL: [clip.spec.name] * items.height,
        C.MODEL_VERSION: [clip.version] * items.height,
        C.ATTRIBUTES: attribute_json,
        C.VECTOR: list(np.asarray(vectors, dtype=np.float32)),
    }
    for name in attributes:
        data[name] = items[name].cast(pl.Utf8).to_list()
    texts = keyword_texts(items.select(C.DESCRIPTION, *[pl.col(name).cast(pl.Utf8) for name in attributes]))
    return pa.Table.from_pydict(data, schema=schema).append_column(pa.field(C.KEYWORD_TEXT, pa.utf8()), pa.array(texts, pa.utf8()))


def _batches(items: pl.DataFrame, size: int) -> Iterator[pl.DataFrame]:
    for start in range(0, items.height, size):
        yield items.slice(start, size)


def _read_ahead(read_image: Callable[[str], bytes], uris: list[str], depth: int) -> Iterator[tuple[int, bytes]]:
    """(position, bytes) of each uri in order, with up to `depth` reads in flight on a thread pool.

    Object-store latency then hides behind the encoder, and at most `depth` images are held.
    """
    pool = ThreadPoolExecutor(max_workers=min(READ_WORKERS, depth), thread_name_prefix="image-read")
    pending: deque[tuple[int, Future]] = deque()
    try:
        for position, uri in enumerate(uris):
            pending.append((position, pool.submit(read_image, uri)))
            if len(pending) >= depth:
                position, read = pending.popleft()
                yield position, read.result()
        while pending:
            position, read = pending.popleft()
            yield position, read.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _encoded_batches(
    items: pl.DataFrame,
    clip: LoadedClip,
    modality: str,
    read_image: Callable[[str], bytes],
    batch_size: int,
) -> Iterator[tuple[pl.DataFrame, np.ndarray]]:
    if modality == "text":
        # Chunks of several batches let encode_texts group texts of similar length.
        for chunk in _batches(items, max(batch_size, WRITE_ROWS)):
            yield chunk, encode_texts(clip, chunk[C.DESCRIPTION].to_list(), batch_size=batch_size)
    elif modality == "image":
        images = _read_ahead(read_image, items[C.IMAGE_URI].to_list(), depth=READ_AHEAD_BATCHES * batch_size)
        for positions, vectors in iter_image_batches(clip, images, batch_size=batch_size):
            yield items[positions], vectors
    else:
        raise ValueError(f"unknown modality {modality!r}: expected one of {C.MODALITIES}")


class _BatchWriter:
    """Upserts encoded batches into one table on a background thread, coalesced into larger commits.

    Each merge-insert costs a commit and leaves a fragment whatever its size, so batches are
    gathered until WRITE_ROWS rows or WRITE_INTERVAL_S seconds since the last commit; the
    encoder keeps running while a commit is in flight. At most one commit is in flight and
    WRITE_ROWS rows wait, so memory stays bounded.
    """

    def __init__(self, db, name: str, clip: LoadedClip, on_commit: Callable[[int], None]):
        self._db, self._name, self._clip, self._on_commit = db, name, clip, on_commit
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lancedb-write")
        self._waiting: list[tuple[pl.DataFrame, np.ndarray]] = []
        self._waiting_rows = 0
        self._last_commit = time.perf_counter()
        self._in_flight: tuple[Future, int] | None = None
        self.written = 0

    def add(self, items: pl.DataFrame, vectors: np.ndarray) -> None:
        """Queue one encoded batch; commits when enough rows or time have gathered."""
        self._waiting.append((items, vectors))
        self._waiting_rows += items.height
        if self._waiting_rows >= WRITE_ROWS or time.perf_counter() - self._last_commit >= WRITE_INTERVAL_S:
            self._commit_waiting()

    def close(self, *, flush: bool) -> None:
        """Commit what waits (when `flush`), wait for the last commit, stop the thread."""
        try:
            if flush:
                self._commit_waiting()
            self._finish_in_flight()
        finally:
            self._pool.shutdown(wait=True)

    def _commit_waiting(self) -> None:
        if not self._waiting:
            return
        items = pl.concat([batch for batch, _ in self._waiting], how="vertical")
        rows = embedding_rows(items, np.concatenate([vectors for _, vectors in self._waiting]), self._clip)
        self._waiting, self._waiting_rows = [], 0
        self._finish_in_flight()
        self._in_flight = (self._pool.submit(tables.upsert_rows, self._db, self._name, rows), rows.num_rows)
        self._last_commit = time.perf_counter()

    def _finish_in_flight(self) -> None:
        if self._in_flight is None:
            return
        commit, count = self._in_flight
        self._in_flight = None
        commit.result()
        self.written += count
        self._on_commit(self.written)


class EncodeEngine(Protocol):
    """Somewhere else to run the encode stage (e.g. scale.ray_engine.RayEngine); reads images itself."""

    def encode(
        self, items: pl.DataFrame, clip: LoadedClip, modality: str, batch_size: int
    ) -> Iterator[tuple[pl.DataFrame, np.ndarray]]:
        """Yield (rows, vectors) covering every row of `items` once, in any order."""
        ...


@dataclass(frozen=True)
class RemovalGuard:
    """Removing more than `max_share` of a table in one sync needs the catalog's deletion records
    (`deleted_ids`, asked for only then) or `force`: a lost input file must not empty a table."""

    max_share: float = 0.10
    force: bool = False
    deleted_ids: Callable[[], Collection[str]] = lambda: ()


def guarded_removals(to_remove: list[str], table_rows: int, guard: RemovalGuard) -> tuple[list[str], str | None]:
    """The ids to remove now, and why the others are kept (None when none are)."""
    limit = guard.max_share * table_rows
    if guard.force or len(to_remove) <= limit:
        return to_remove, None
    deleted = set(guard.deleted_ids())
    unrecorded = [item for item in to_remove if item not in deleted]
    if len(unrecorded) <= limit:
        return to_remove, None
    return [item for item in to_remove if item in deleted], (
        f"kept {len(unrecorded)} of {table_rows} rows whose items left the catalog with no deletion record: "
        f"more than {guard.max_share:.0%} of the table in one run, so the catalog input likely shrank "
        f"(a lost or repointed asset file); e.g. {unrecorded[:3]}. Re-run with force_removals to remove them"
    )


def sync_embeddings(
    catalog: pl.DataFrame,
    db,
    clip: LoadedClip,
    modality: str,
    *,
    read_image: Callable[[str], bytes],
    batch_size: int | None = None,
    log: Callable[[str], None] = lambda message: None,
    engine: EncodeEngine | None = None,
    removal_guard: RemovalGuard = RemovalGuard(),
) -> EmbeddingSyncReport:
    """Embed what the table lacks, upsert it batch by batch, and remove items gone from the catalog.

    `engine` runs the encode stage elsewhere (Ray); None encodes in this process.
    """
    name = tables.table_name(clip.spec.name, modality)
    keys = tables.embedded_keys(db, name)
    duplicated = tables.duplicated_item_ids(keys)
    if duplicated:  # left by writers before per-table locks: keep each id's last row
        log(f"{name}: {tables.repair_duplicates(db, name, duplicated)} duplicate rows of {len(duplicated)} ids removed")
        keys = tables.embedded_keys(db, name)
    plan = plan_embedding_sync(catalog, keys, clip.version)
    to_remove, withheld = guarded_removals(plan.to_remove, keys.height, removal_guard)
    size = batch_size or clip.batch_size
    log(f"{name}: {plan.to_embed.height} to embed, {plan.up_to_date} up to date, {len(plan.to_remove)} to remove")
    started = time.perf_counter()

    def committed(embedded: int) -> None:
        rate = embedded / (time.perf_counter() - started)
        log(f"{name}: {embedded}/{plan.to_embed.height} embedded ({rate:.1f} items/s)")

    writer = _BatchWriter(db, name, clip, committed)
    completed = False
    try:
        encoded = (
            engine.encode(plan.to_embed, clip, modality, size)
            if engine is not None
            else _encoded_batches(plan.to_embed, clip, modality, read_image, size)
        )
        with contextlib.closing(encoded) as batches:
            for batch, vectors in batches:
                writer.add(batch, vectors)
        completed = True
    finally:
        writer.close(flush=completed)
    embedded = writer.written
    seconds = time.perf_counter() - started
    if withheld:
        log(f"{name}: {withheld}")
    removed = tables.delete_items(db, name, to_remove) if to_remove else 0
    table = tables.open_existing_table(db, name)
    rows_after = table.count_rows() if table is not None else 0
    return EmbeddingSyncReport(
        table=name,
        catalog_items=catalog.height,
        embedded=embedded,
        skipped=plan.up_to_date,
        removed=removed,
        rows_after=rows_after,
        seconds=seconds,
        removal_withheld=withheld,
    )
