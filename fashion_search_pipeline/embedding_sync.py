"""Bring one LanceDB embedding table (one model, one modality) in line with the catalog.

Only items whose (content hash, model version) the table does not hold yet are embedded;
items gone from the catalog are removed. Batches stream from storage through the encoder
into LanceDB, so memory stays bounded by the batch size, not the catalog size.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from fashion_search_pipeline import columns as C
from fashion_search_pipeline.models.encoders import encode_texts, iter_image_batches
from fashion_search_pipeline.models.loading import LoadedClip
from fashion_search_pipeline.store import tables


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
    attribute_json = [
        json.dumps({k: v for k, v in zip(attributes, values) if v is not None}, ensure_ascii=False)
        for values in items.select(attributes).iter_rows()
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
    return pa.Table.from_pydict(data, schema=schema)


def _batches(items: pl.DataFrame, size: int) -> Iterator[pl.DataFrame]:
    for start in range(0, items.height, size):
        yield items.slice(start, size)


def _encoded_batches(
    items: pl.DataFrame,
    clip: LoadedClip,
    modality: str,
    read_image: Callable[[str], bytes],
    batch_size: int,
) -> Iterator[tuple[pl.DataFrame, np.ndarray]]:
    if modality == "text":
        for batch in _batches(items, batch_size):
            yield batch, encode_texts(clip, batch[C.DESCRIPTION].to_list(), batch_size=batch_size)
    elif modality == "image":
        by_position = ((i, read_image(uri)) for i, uri in enumerate(items[C.IMAGE_URI].to_list()))
        for positions, vectors in iter_image_batches(clip, by_position, batch_size=batch_size):
            yield items[positions], vectors
    else:
        raise ValueError(f"unknown modality {modality!r}: expected one of {C.MODALITIES}")


def sync_embeddings(
    catalog: pl.DataFrame,
    db,
    clip: LoadedClip,
    modality: str,
    *,
    read_image: Callable[[str], bytes],
    batch_size: int | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> EmbeddingSyncReport:
    """Embed what the table lacks, upsert it batch by batch, and remove items gone from the catalog."""
    name = tables.table_name(clip.spec.name, modality)
    plan = plan_embedding_sync(catalog, tables.embedded_keys(db, name), clip.version)
    size = batch_size or clip.spec.batch_size
    log(f"{name}: {plan.to_embed.height} to embed, {plan.up_to_date} up to date, {len(plan.to_remove)} to remove")
    started = time.perf_counter()
    embedded = 0
    for batch, vectors in _encoded_batches(plan.to_embed, clip, modality, read_image, size):
        tables.upsert_rows(db, name, embedding_rows(batch, vectors, clip))
        embedded += batch.height
        elapsed = time.perf_counter() - started
        log(f"{name}: {embedded}/{plan.to_embed.height} embedded ({embedded / elapsed:.1f} items/s)")
    seconds = time.perf_counter() - started
    removed = tables.delete_items(db, name, plan.to_remove) if plan.to_remove else 0
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
    )
