"""Cross-modal product search for notebooks and tools: a text or an image in, products out.

    from fashion_search_pipeline.search import CatalogSearch
    search = CatalogSearch.from_settings(Settings.from_env())   # FASHION_SEARCH_DB, _MODELS, AWS_*
    search.text("red summer dress", k=5, where="gender = 'Women'")
    search.image("query.jpg", model="fashion-clip")

A query is encoded once by the model, searched against both of the model's tables
(<model>__image holds image embeddings, <model>__text description embeddings) at
the same time by cosine similarity, and the two hit lists are fused into one row
per product (see store.fusion) with the model's fusion strategy: the one the latest
retrieval evaluation recorded as best for it (store.fusion_choices), else store.fusion.DEFAULT_STRATEGY ("hybrid").
Models and table handles stay loaded between calls.

One model version per answer: the query is encoded by the version whose vectors the tables hold.
After a retrain, until its re-embedding starts, that is the previous version, loaded from its
published folder (models/<name>/versions/<version>/); while tables hold two versions, searches on
the model fail with ReembeddingInProgressError naming the new version.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import fsspec
import numpy as np
import polars as pl
from PIL import Image

from fashion_search_pipeline import config
from fashion_search_pipeline.columns import DESCRIPTION, IMAGE_URI, ITEM_ID, MODALITIES, MODEL_VERSION, SCORE, VECTOR
from fashion_search_pipeline.models.encoders import encode_images, encode_texts
from fashion_search_pipeline.models.loading import LoadedClip, load_clip
from fashion_search_pipeline.models.published import version_spec
from fashion_search_pipeline.models.registry import ModelSpec, load_registry
from fashion_search_pipeline.store.clusters import collapse_variants
from fashion_search_pipeline.store.fusion import (
    CANDIDATES_PER_RESULT,
    DEFAULT_STRATEGY,
    KEYWORD_STRATEGIES,
    LEGS,
    STRATEGIES,
    fuse,
)
from fashion_search_pipeline.store.fusion_choices import read_fusion_choices
from fashion_search_pipeline.store.indexes import DISTANCE_COLUMN, AnnSearchParams, ann_search_params, nearest_query
from fashion_search_pipeline.store.keyword import KEYWORD, keyword_search
from fashion_search_pipeline.store.tables import (
    ModelTablesMissingError,
    connect,
    is_attribute_column,
    open_existing_table,
    table_name,
)

if TYPE_CHECKING:
    from lancedb.table import Table

ImageQuery = str | os.PathLike | bytes | Image.Image

# How often warm table handles look for commits made by other writers.
READ_CONSISTENCY = timedelta(seconds=5)
# Searches whose legs (image, text, keyword) run at once, each leg on its own thread; the legs of
# more concurrent searches wait for a thread. With one thread per modality (2), a hybrid query's
# keyword leg waited for a vector leg, and the service's concurrent queries shared 2 threads.
CONCURRENT_SEARCHES = 8


class CatalogSearch:
    """Text and image search over the embedding tables of one LanceDB database.

    db_uri: a folder or s3://bucket/prefix. s3: S3 access for the database and for query images
    on s3:// (storage_options: LanceDB options instead of s3's). registry: model specs, a
    registry file path, or None (the built-in models; models_root, Settings.models_dir, is where their
    domain-clip is published). default_model: used when a query names none; without it, the
    first registry model that has tables in the database. fusion: how image-table and
    text-table hits are combined (store.fusion.STRATEGIES, e.g. "hybrid", "rrf", "raw"); None: each
    model's strategy recorded by the latest retrieval evaluation, else store.fusion.DEFAULT_STRATEGY.
    """

    def __init__(
        self,
        db_uri: str | os.PathLike,
        *,
        storage_options: dict | None = None,
        s3: config.S3Settings | None = None,
        registry: Mapping[str, ModelSpec] | str | os.PathLike | None = None,
        models_root: str | os.PathLike | None = None,
        default_model: str | None = None,
        fusion: str | None = None,
    ):
        self.db_uri = str(db_uri)
        self.s3 = s3 or config.S3Settings()
        if storage_options is None:
            storage_options = config.lancedb_options_for(self.db_uri, self.s3)
        self.registry = dict(registry) if isinstance(registry, Mapping) else load_registry(registry, models_root=models_root)
        if default_model is not None and default_model not in self.registry:
            raise ValueError(f"default model {default_model!r} is not in the registry ({sorted(self.registry)})")
        self.default_model = default_model
        self.fusion = None if fusion is None else _checked_strategy(fusion)
        self._db = connect(self.db_uri, storage_options, read_consistency_interval=READ_CONSISTENCY)
        self._tables: dict[str, Table] = {}
        self._ann: dict[str, tuple[int, AnnSearchParams | None]] = {}
        self._versions: dict[str, tuple[int, frozenset[str]]] = {}
        self._fusion_choices: tuple[float, dict[str, str]] | None = None
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=len(LEGS) * CONCURRENT_SEARCHES, thread_name_prefix="catalog-search")

    @classmethod
    def from_settings(cls, settings: config.Settings, **options) -> CatalogSearch:
        """Search over `settings.db` with its S3 access and model registry file; `options` as for __init__."""
        options.setdefault("models_root", settings.models_dir)
        return cls(settings.db, s3=settings.s3, registry=options.pop("registry", settings.models_file), **options)

    def text(
        self,
        query: str,
        model: str | None = None,
        k: int = 10,
        where: str | None = None,
        *,
        fusion: str | None = None,
        collapse: bool = False,
    ) -> pl.DataFrame:
        """Products matching a text query: item_id, image_uri, description, attribute
        columns, score, matched, rank. `where` is a SQL filter on attribute columns
        ("gender = 'Women'") applied before the vector search and the keyword search (the
        hybrid strategies' BM25 leg). `collapse`: one row per product cluster (variants,
        re-uploads; see product_clusters), with `variants` counting the cluster's others."""
        if not isinstance(query, str) or not query.strip():
            raise ValueError(f"a text query must be a non-empty string, got {query!r}")
        return self._search(model, lambda clip: encode_texts(clip, [query]), k, where, fusion, query, collapse)

    def image(
        self,
        image: ImageQuery,
        model: str | None = None,
        k: int = 10,
        where: str | None = None,
        *,
        fusion: str | None = None,
        collapse: bool = False,
    ) -> pl.DataFrame:
        """Products matching a query image (a local path, an fsspec URI such as s3://...
        read with this search's S3 settings, encoded bytes, or a PIL image); same
        columns, `where` filter and `collapse` as `text` (there is no keyword leg)."""
        picture = _image_input(image, self.s3)
        return self._search(model, lambda clip: encode_images(clip, [picture]), k, where, fusion, None, collapse)

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
        keyword: str | None = None,
        collapse: bool = False,
    ) -> pl.DataFrame:
        spec, strategy, tables = self._plan(model, k, fusion)
        vector = encode(self._clip_for(spec, tables))[0]
        return self._nearest_fused(tables, vector, k, where, strategy, None, keyword, collapse)

    def encode(self, model: str | None = None, *, texts=None, images=None) -> EncodedQueries:
        """Encode a batch of text queries (or of query images, as `image` takes them) in one model call:
        the hook for callers that gather concurrent queries (the service's micro-batching)."""
        if (texts is None) == (images is None):
            raise ValueError("give either texts or images to encode")
        spec = self._spec(model)
        clip = self._clip_for(spec, self._open_tables(spec.name, MODALITIES))
        if texts is not None:
            vectors = encode_texts(clip, list(texts))
        else:
            vectors = encode_images(clip, [_image_input(image, self.s3) for image in images])
        return EncodedQueries(spec.name, clip.version, vectors)

    def vector(
        self,
        vector: np.ndarray,
        model: str | None = None,
        k: int = 10,
        where: str | None = None,
        *,
        fusion: str | None = None,
        timings: dict[str, float] | None = None,
        keyword: str | None = None,
        collapse: bool = False,
    ) -> pl.DataFrame:
        """Products nearest to an already encoded query (from `encode`, or an item's stored vector);
        same columns, `where` and `collapse` as `text`. `keyword`: the query's text, for the keyword
        leg of the hybrid strategies (None: no keyword leg). `timings`, when given, receives seconds
        per stage (search_image, search_text, search_keyword, fusion, payload)."""
        spec, strategy, tables = self._plan(model, k, fusion)
        self._tables_version(spec, tables)  # never an answer from tables of two versions
        vector = np.asarray(vector, dtype=np.float32)
        return self._nearest_fused(tables, vector, k, where, strategy, timings, keyword, collapse)

    def _plan(self, model: str | None, k: int, fusion: str | None) -> tuple[ModelSpec, str, dict[str, tuple[str, Table]]]:
        """The model's spec, the fusion strategy and the tables a search of `k` products reads."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        spec = self._spec(model)
        strategy = _checked_strategy(fusion) if fusion is not None else self.fusion or self._evaluated_fusion(spec.name)
        modalities = (strategy,) if strategy in MODALITIES else ("text",) if strategy == KEYWORD else MODALITIES
        return spec, strategy, self._open_tables(spec.name, modalities)

    def models_with_tables(self) -> list[str]:
        """The registry's models that have at least one embedding table, in registry order."""
        return [name for name in self.registry if any(table_name(name, m) in self._db for m in MODALITIES)]

    def tables(self, model: str | None = None) -> dict[str, Table]:
        """The model's embedding tables that exist, by modality, as the searches use them (kept open)."""
        spec = self._spec(model)
        return {modality: table for modality, (_, table) in self._open_tables(spec.name, MODALITIES).items()}

    def _nearest_fused(
        self, tables, vector, k, where, strategy, timings, keyword=None, collapse=False
    ) -> pl.DataFrame:
        wanted = k * CANDIDATES_PER_RESULT if collapse else k
        limit = wanted if len(tables) == 1 and strategy not in KEYWORD_STRATEGIES else wanted * CANDIDATES_PER_RESULT
        futures = {
            modality: self._pool.submit(_timed, self._nearest, name, table, vector, limit, where)
            for modality, (name, table) in tables.items()
            if strategy != KEYWORD
        }
        if strategy in KEYWORD_STRATEGIES and keyword is not None:
            name, table = tables.get("text") or next(iter(tables.values()))
            futures[KEYWORD] = self._pool.submit(_timed, self._keyword, name, table, keyword, limit, where)
        elif strategy == KEYWORD:
            raise ValueError("fusion 'keyword' needs a text query")
        results = {}
        for modality, future in futures.items():
            results[modality], seconds = future.result()
            if timings is not None:
                timings[f"search_{modality}"] = seconds
        fused, seconds = _timed(fuse, results, strategy, wanted)
        if timings is not None:
            timings["fusion"] = seconds
        products, seconds = _timed(self._with_payload, fused, tables)
        if timings is not None:
            timings["payload"] = seconds
        return collapse_variants(products, k) if collapse else products

    def _keyword(self, name: str, table: Table, query: str, limit: int, where: str | None) -> pl.DataFrame:
        """The keyword leg: the ids of the `limit` best BM25 matches over description and attribute text."""
        try:
            return keyword_search(table, query, limit, where=where)
        except ValueError as error:
            if not where:
                raise
            raise ValueError(f"filter {where!r} cannot be applied to table {name!r}: {error}") from error

    def _with_payload(self, ranked: pl.DataFrame, tables: dict[str, tuple[str, Table]]) -> pl.DataFrame:
        """`ranked` (fused item ids and scores) with its items' payload columns: image_uri, description,
        attributes. They are read once, for the fused items only: a million-row leg that also fetched
        them for its 300 candidates took three times as long as one that fetches ids alone. An item
        deleted between the legs and this read (a drop removing it) keeps null payload columns."""
        from lancedb.expr import col
        ordered = sorted(tables.values(), key=lambda entry: entry is not tables.get("text"))  # text table first
        schema = ordered[0][1].schema
        columns = [c for c in (IMAGE_URI, DESCRIPTION) if c in schema.names]
        columns += [c for c in schema.names if is_attribute_column(c)]
        found = [pl.from_arrow(schema.empty_table().select([ITEM_ID, *columns]))]
        missing = ranked[ITEM_ID].to_list()
        for _, table in ordered:  # an item not (yet) in the text table is read from the image table
            if not missing:
                break
            shared = [c for c in columns if c in table.schema.names]
            rows = table.search().where(col(ITEM_ID).isin(missing)).select([ITEM_ID, *shared]).limit(None).to_arrow()
            found.append(pl.from_arrow(rows))
            missing = sorted(set(missing) - set(found[-1][ITEM_ID].to_list()))
        payload = pl.concat(found, how="diagonal_relaxed").unique(ITEM_ID, keep="first")
        rest = [c for c in ranked.columns if c != ITEM_ID]
        return ranked.join(payload, on=ITEM_ID, how="left", maintain_order="left").select(ITEM_ID, *columns, *rest)

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
        """One table's `limit` nearest items by cosine: item_id, score."""
        dim = table.schema.field(VECTOR).type.list_size
        if dim != vector.shape[0]:
            raise ValueError(
                f"table {name!r} holds {dim}-dimensional vectors but the model encodes {vector.shape[0]}; "
                "re-materialize the embeddings for this model"
            )
        params = self._ann_params(name, table)
        search = nearest_query(table, vector, params, limit, filtered=bool(where)).select([ITEM_ID, DISTANCE_COLUMN])
        if where:
            search = search.where(where, prefilter=True)
        try:
            hits = search.to_arrow()
        except ValueError as error:
            if not where:
                raise
            raise ValueError(f"filter {where!r} cannot be applied to table {name!r}: {error}") from error
        frame = pl.from_arrow(hits)
        return frame.with_columns((1.0 - pl.col(DISTANCE_COLUMN)).alias(SCORE)).drop(DISTANCE_COLUMN)

    def _clip_for(self, spec: ModelSpec, tables: dict[str, tuple[str, Table]]) -> LoadedClip:
        """The model version whose vectors `tables` hold: the current checkpoint, or an earlier
        published version while a retrain's re-embedding has not started (one version per answer)."""
        version = self._tables_version(spec, tables)
        current = load_clip(spec)
        if version is None or version == current.version:
            return current
        earlier = version_spec(spec, version)
        if earlier is None:
            raise ReembeddingInProgressError(
                f"model {spec.name!r}: its tables hold version {version}, whose checkpoint is not kept, and the "
                f"registered version is {current.version}: re-materialize the embeddings for model {spec.name!r}"
            )
        return load_clip(earlier)

    def _tables_version(self, spec: ModelSpec, tables: dict[str, tuple[str, Table]]) -> str | None:
        """The one model version the tables' rows hold (None when empty); raises while they hold two."""
        versions = frozenset().union(*(self._table_versions(name, table) for name, table in tables.values()))
        if len(versions) > 1:
            raise ReembeddingInProgressError.of(spec, versions)
        return next(iter(versions), None)

    def table_versions(self, model: str | None = None) -> frozenset[str]:
        """The model versions the rows of the model's tables hold (re-read when a table has a new commit)."""
        spec = self._spec(model)
        tables = self._open_tables(spec.name, MODALITIES)
        return frozenset().union(*(self._table_versions(name, table) for name, table in tables.values()))

    def _table_versions(self, name: str, table: Table) -> frozenset[str]:
        """The model versions of a table's rows, re-read when the table has a new commit."""
        commit = table.version
        cached = self._versions.get(name)
        if cached is None or cached[0] != commit:
            keys = table.search().select([MODEL_VERSION]).limit(None).to_arrow()
            cached = (commit, frozenset(keys.column(MODEL_VERSION).to_pylist()))
            self._versions[name] = cached
        return cached[1]

    def _ann_params(self, name: str, table: Table) -> AnnSearchParams | None:
        """ANN settings for the table's current version (None: exact search)."""
        version = table.version
        cached = self._ann.get(name)
        if cached is None or cached[0] != version:
            cached = (version, ann_search_params(table))
            self._ann[name] = cached
        return cached[1]


class ReembeddingInProgressError(RuntimeError):
    """A model's tables hold vectors of more than one version: a re-embedding is under way."""

    @classmethod
    def of(cls, spec: ModelSpec, held: frozenset[str], encoded_by: str | None = None) -> ReembeddingInProgressError:
        """The error for `spec`'s tables holding versions `held` (and a query encoded by `encoded_by`)."""
        query = f"the query was encoded by version {encoded_by}, " if encoded_by else ""
        return cls(
            f"model {spec.name!r}: re-embedding to version {load_clip(spec).version} in progress ({query}its tables "
            f"hold versions {', '.join(sorted(held))}); search answers again once the embeddings runs finish"
        )


@dataclass(frozen=True)
class EncodedQueries:
    """Query vectors (one row per query) and the model name and version that encoded them."""

    model: str
    version: str
    vectors: np.ndarray


def _timed(function, *args):
    """function(*args) and the seconds it took."""
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


def _checked_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown fusion strategy {strategy!r}; choose one of {STRATEGIES}")
    return strategy


def _image_input(image: ImageQuery, s3: config.S3Settings) -> bytes | Image.Image:
    """Encoded bytes or a PIL image for the encoder; paths and URIs are read."""
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        location = os.fspath(image)
        if "://" in location:
            with fsspec.open(location, "rb", **config.storage_options_for(location, s3)) as handle:
                return handle.read()
        path = Path(location).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"query image {path} does not exist")
        return path.read_bytes()
    raise TypeError(f"a query image must be a path, bytes or a PIL image, got {type(image).__name__}")
