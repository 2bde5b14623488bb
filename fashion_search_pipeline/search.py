"""Cross-modal product search for notebooks and tools: a text or an image in, products out.

    from fashion_search_pipeline.search import CatalogSearch
    search = CatalogSearch()                      # FASHION_SEARCH_DB, FASHION_SEARCH_MODELS
    search.text("red summer dress", k=5, where="gender = 'Women'")
    search.image("query.jpg", model="fashion-clip")

A query is encoded once by the model, searched against both of the model's tables
(<model>__image holds image embeddings, <model>__text description embeddings) at
the same time by cosine similarity, and the two hit lists are fused into one row
per product (see store.fusion) with the model's fusion strategy: the one the latest
retrieval evaluation recorded as best for it (store.fusion_choices), else "weighted".
Models and table handles stay loaded between calls.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import fsspec
import numpy as np
import polars as pl
from lancedb.table import Table
from PIL import Image

from fashion_search_pipeline import config
from fashion_search_pipeline.columns import DESCRIPTION, IMAGE_URI, ITEM_ID, MODALITIES, SCORE, VECTOR
from fashion_search_pipeline.models.encoders import encode_images, encode_texts
from fashion_search_pipeline.models.loading import LoadedClip, load_clip
from fashion_search_pipeline.models.registry import ModelSpec, load_registry
from fashion_search_pipeline.store.fusion import DEFAULT_STRATEGY, STRATEGIES, fuse
from fashion_search_pipeline.store.fusion_choices import read_fusion_choices
from fashion_search_pipeline.store.indexes import DISTANCE_COLUMN, AnnSearchParams, ann_search_params, nearest_query
from fashion_search_pipeline.store.tables import (
    ModelTablesMissingError,
    connect,
    is_attribute_column,
    open_existing_table,
    table_name,
)

ImageQuery = str | os.PathLike | bytes | Image.Image

# Hits fetched per table for each result wanted, so fusion sees items ranked a little lower too.
CANDIDATES_PER_RESULT = 3
# How often warm table handles look for commits made by other writers.
READ_CONSISTENCY = timedelta(seconds=5)


class CatalogSearch:
    """Text and image search over the embedding tables of one LanceDB database.

    registry: model specs, a registry file path, or None (FASHION_SEARCH_MODELS, else
    the built-in models). default_model: used when a query names none; without it, the
    first registry model that has tables in the database. fusion: how image-table and
    text-table hits are combined ("weighted", "rrf", "raw", "image", "text"); None: each
    model's strategy recorded by the latest retrieval evaluation, else "weighted".
    """

    def __init__(
        self,
        db_uri: str | None = None,
        *,
        storage_options: dict | None = None,
        registry: Mapping[str, ModelSpec] | str | os.PathLike | None = None,
        default_model: str | None = None,
        fusion: str | None = None,
    ):
        self.db_uri = str(db_uri or config.db_uri())
        self.registry = dict(registry) if isinstance(registry, Mapping) else load_registry(registry)
        if default_model is not None and default_model not in self.registry:
            raise ValueError(f"default model {default_model!r} is not in the registry ({sorted(self.registry)})")
        self.default_model = default_model
        self.fusion = None if fusion is None else _checked_strategy(fusion)
        self._db = connect(self.db_uri, storage_options, read_consistency_interval=READ_CONSISTENCY)
        self._tables: dict[str, Table] = {}
        self._ann: dict[str, tuple[int, AnnSearchParams | None]] = {}
        self._fusion_choices: tuple[float, dict[str, str]] | None = None
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=len(MODALITIES), thread_name_prefix="catalog-search")

    def text(
        self, query: str, model: str | None = None, k: int = 10, where: str | None = None, *, fusion: str | None = None
    ) -> pl.DataFrame:
        """Products matching a text query: item_id, image_uri, description, attribute
        columns, score, matched, rank. `where` is a SQL filter on attribute columns
        ("gender = 'Women'") applied before the vector search."""
        if not isinstance(query, str) or not query.strip():
            raise ValueError(f"a text query must be a non-empty string, got {query!r}")
        return self._search(model, lambda clip: encode_texts(clip, [query]), k, where, fusion)

    def image(
        self,
        image: ImageQuery,
        model: str | None = None,
        k: int = 10,
        where: str | None = None,
        *,
        fusion: str | None = None,
    ) -> pl.DataFrame:
        """Products matching a query image (a local path, an fsspec URI such as s3://...
        read with the environment's S3 settings, encoded bytes, or a PIL image); same
        columns and `where` filter as `text`."""
        picture = _image_input(image)
        return self._search(model, lambda clip: encode_images(clip, [picture]), k, where, fusion)

    def close(self) -> None:
        """Stop the search threads; the object cannot be used afterwards."""
        self._pool.shutdown(wait=True)

    def __enter__(self) -> CatalogSearch:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _search(
        self,
        model: str | None,
        encode: Callable[[LoadedClip], np.ndarray],
        k: int,
        where: str | None,
        fusion: str | None,
    ) -> pl.DataFrame:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        spec = self._spec(model)
        strategy = _checked_strategy(fusion) if fusion is not None else self.fusion or self._evaluated_fusion(spec.name)
        modalities = (strategy,) if strategy in MODALITIES else MODALITIES
        tables = self._open_tables(spec.name, modalities)
        vector = encode(load_clip(spec))[0]
        limit = k if len(modalities) == 1 else k * CANDIDATES_PER_RESULT
        futures = {
            modality: self._pool.submit(self._nearest, name, table, vector, limit, where)
            for modality, (name, table) in tables.items()
        }
        return fuse({modality: future.result() for modality, future in futures.items()}, strategy, k)

    def fusion_for(self, model: str | None = None) -> str:
        """The fusion strategy a query on `model` uses when the call names none."""
        return self.fusion or self._evaluated_fusion(self._spec(model).name)

    def _evaluated_fusion(self, model: str) -> str:
        """The model's strategy recorded by the latest evaluation (re-read at most every
        READ_CONSISTENCY, outside the lock), else the default."""
        cached = self._fusion_choices
        if cached is None or time.monotonic() - cached[0] >= READ_CONSISTENCY.total_seconds():
            cached = (time.monotonic(), read_fusion_choices(self._db))
            self._fusion_choices = cached  # one tuple, replaced whole: readers never see half of it
        return cached[1].get(model, DEFAULT_STRATEGY)

    def _spec(self, model: str | None) -> ModelSpec:
        name = model or self.default_model or self._first_model_with_tables()
        if name not in self.registry:
            raise ValueError(f"model {name!r} is not in the registry ({sorted(self.registry)})")
        return self.registry[name]

    def _first_model_with_tables(self) -> str:
        for name in self.registry:
            if any(table_name(name, modality) in self._db for modality in MODALITIES):
                return name
        raise ModelTablesMissingError(
            f"no model of the registry ({sorted(self.registry)}) has embedding tables in {self.db_uri}; "
            "materialize the embeddings assets first (Dagster UI or `fashion-search materialize`)"
        )

    def _open_tables(self, model: str, modalities: tuple[str, ...]) -> dict[str, tuple[str, Table]]:
        """The model's tables for `modalities` that exist, kept open between calls."""
        found = {}
        with self._lock:
            for modality in modalities:
                name = table_name(model, modality)
                table = self._tables.get(name)
                if table is None:
                    table = open_existing_table(self._db, name)
                if table is not None:
                    self._tables[name] = table
                    found[modality] = (name, table)
        if not found:
            looked_for = " and ".join(table_name(model, modality) for modality in modalities)
            raise ModelTablesMissingError(
                f"model {model!r} has no embedding tables in {self.db_uri}: looked for {looked_for}. "
                f"Create them by materializing the embeddings assets for model {model!r} "
                "(Dagster UI or `fashion-search materialize`)"
            )
        return found

    def _nearest(self, name: str, table: Table, vector: np.ndarray, limit: int, where: str | None) -> pl.DataFrame:
        """One table's `limit` nearest items by cosine: item_id, payload columns, score."""
        dim = table.schema.field(VECTOR).type.list_size
        if dim != vector.shape[0]:
            raise ValueError(
                f"table {name!r} holds {dim}-dimensional vectors but the model encodes {vector.shape[0]}; "
                "re-materialize the embeddings for this model"
            )
        names = table.schema.names
        columns = [c for c in (ITEM_ID, IMAGE_URI, DESCRIPTION) if c in names]
        columns += [c for c in names if is_attribute_column(c)]
        params = self._ann_params(name, table)
        search = nearest_query(table, vector, params, filtered=bool(where)).select([*columns, DISTANCE_COLUMN]).limit(limit)
        if where:
            search = search.where(where, prefilter=True)
        try:
            hits = search.to_arrow()
        except ValueError as error:
            if not where:
                raise
            raise ValueError(f"filter {where!r} cannot be applied to table {name!r} (columns {columns}): {error}") from error
        frame = pl.from_arrow(hits)
        return frame.with_columns((1.0 - pl.col(DISTANCE_COLUMN)).alias(SCORE)).drop(DISTANCE_COLUMN)

    def _ann_params(self, name: str, table: Table) -> AnnSearchParams | None:
        """ANN settings for the table's current version (None: exact search)."""
        version = table.version
        cached = self._ann.get(name)
        if cached is None or cached[0] != version:
            cached = (version, ann_search_params(table))
            self._ann[name] = cached
        return cached[1]


def _checked_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown fusion strategy {strategy!r}; choose one of {STRATEGIES}")
    return strategy


def _image_input(image: ImageQuery) -> bytes | Image.Image:
    """Encoded bytes or a PIL image for the encoder; paths and URIs are read."""
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        location = os.fspath(image)
        if "://" in location:
            with fsspec.open(location, "rb", **config.storage_options_for(location)) as handle:
                return handle.read()
        path = Path(location).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"query image {path} does not exist")
        return path.read_bytes()
    raise TypeError(f"a query image must be a path, bytes or a PIL image, got {type(image).__name__}")
