"""Query latency and ANN recall at catalog scale: a million generated CLIP-like vectors in LanceDB.

The image table holds `image_rows` vectors, the text table `text_rows`; both get their indexes
from store.indexes.ensure_indexes, exactly as the embedding step builds them. Measured: the vector
search alone (what CatalogSearch runs per table) against exact search, and CatalogSearch.text end
to end (encode the query with ViT-B-32, search both tables concurrently, fuse).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence

import numpy as np
import polars as pl
import pyarrow as pa

from benchmarks.vectors import ClusteredEmbeddings, ExactTopK
from fashion_search_pipeline import columns as C
from fashion_search_pipeline.demo_catalog import ARTICLES, BRANDS, COLOURS
from fashion_search_pipeline.models.encoders import encode_texts
from fashion_search_pipeline.models.loading import LoadedClip
from fashion_search_pipeline.search import CatalogSearch
from fashion_search_pipeline.service.app import PAGE_BLOCK
from fashion_search_pipeline.store.fusion import CANDIDATES_PER_RESULT
from fashion_search_pipeline.store.indexes import (
    DISTANCE_COLUMN,
    AnnSearchParams,
    ann_search_params,
    ensure_indexes,
    nearest_query,
)
from fashion_search_pipeline.store.keyword import keyword_texts
from fashion_search_pipeline.store.tables import embedding_schema, table_name

K = 10
# The service ranks PAGE_BLOCK fused products from CANDIDATES_PER_RESULT times as many hits per table;
# recall at that depth is measured over the first DEEP_RECALL_AT hits.
DEEP_LIMIT = PAGE_BLOCK * CANDIDATES_PER_RESULT
DEEP_RECALL_AT = 100
WRITE_CHUNK = 100_000
GENDERS = ("Men", "Women", "Unisex")
ATTRIBUTE_COLUMNS = ("gender", "article_type", "colour")


def run(
    db,
    db_uri: str,
    clip: LoadedClip,
    *,
    image_rows: int,
    text_rows: int,
    queries: int,
    text_queries: Sequence[str],
    log: Callable[[str], None],
) -> dict:
    """Build both tables and their indexes, then time vector searches and CatalogSearch.text."""
    source = ClusteredEmbeddings(clip.embed_dim)
    model = clip.spec.name
    exact = ExactTopK(source.sample(queries, seed=99), DEEP_RECALL_AT)
    image_table, image_summary = _built_table(db, table_name(model, "image"), source, image_rows, 1, clip, log, exact)
    _, text_summary = _built_table(db, table_name(model, "text"), source, text_rows, 2, clip, log, None)
    ann = _vector_search(image_table, exact.queries, exact.rows[:, :K])
    flat_ms = _flat_scan_ms(image_table, exact.queries[:3])
    log(
        f"queries: vector search p50 {ann['p50_ms']:.1f} ms, p99 {ann['p99_ms']:.1f} ms, "
        f"recall@{K} {ann['recall_at_10']:.3f} (flat scan {flat_ms:.0f} ms)"
    )
    deep = _deep_vector_search(image_table, exact.queries, exact.rows)
    log(f"queries: {DEEP_LIMIT} results: {deep}")
    exact_ms = image_summary["exact_s"] / queries * 1000
    encode = _query_encode_latency(clip, text_queries)
    end_to_end = _catalog_search_latency(db_uri, clip, text_queries)
    log(f"queries: CatalogSearch.text p50 {end_to_end['p50_ms']:.1f} ms, p99 {end_to_end['p99_ms']:.1f} ms")
    return {
        "image_table": image_summary,
        "text_table": text_summary,
        "vector_search": {**ann, "flat_scan_ms": flat_ms, "exact_numpy_ms": exact_ms},
        "deep_vector_search": deep,
        "query_encode": encode,
        "catalog_search_text": end_to_end,
    }


def _built_table(db, name: str, source: ClusteredEmbeddings, rows: int, seed: int, clip: LoadedClip, log, exact):
    """Write `rows` generated vectors as table `name` and build its indexes; (table, timings).

    `exact` (an ExactTopK, or None) sees every vector on the way, for the ground truth.
    """
    timings = {"rows": rows, "exact_s": 0.0}
    schema = embedding_schema(clip.embed_dim, ATTRIBUTE_COLUMNS).append(pa.field(C.KEYWORD_TEXT, pa.utf8()))  # as the sync writes

    def batches():
        for start, vectors in zip(range(0, rows, WRITE_CHUNK), source.chunks(rows, WRITE_CHUNK, seed=seed)):
            if exact is not None:
                started = time.perf_counter()
                exact.add(vectors, start)
                timings["exact_s"] += time.perf_counter() - started
            yield _record_batch(schema, vectors, start, clip)

    started = time.perf_counter()
    table = db.create_table(name, data=pa.RecordBatchReader.from_batches(schema, batches()), mode="overwrite")
    timings["write_s"] = time.perf_counter() - started - timings["exact_s"]
    started = time.perf_counter()
    timings["indexes"] = ensure_indexes(table)
    timings["index_s"] = time.perf_counter() - started
    log(f"queries: {name}: {rows:,} rows written in {timings['write_s']:.0f} s, "
        f"indexes built in {timings['index_s']:.0f} s ({timings['indexes']})")
    return table, timings


def _record_batch(schema: pa.Schema, vectors: np.ndarray, start: int, clip: LoadedClip) -> pa.RecordBatch:
    """Rows in the embedding-table layout for generated items start, start + 1, ..."""
    n, dim = vectors.shape
    numbers = range(start, start + n)
    colours = list(COLOURS)
    attributes = {
        "gender": [GENDERS[i % len(GENDERS)] for i in numbers],
        "article_type": [ARTICLES[i % len(ARTICLES)] for i in numbers],
        "colour": [colours[(i // len(ARTICLES)) % len(colours)] for i in numbers],
    }
    item_ids = [f"item-{i:07d}" for i in numbers]
    data = {
        C.ITEM_ID: item_ids,
        C.DROP_ID: ["generated"] * n,
        C.IMAGE_URI: [f"generated://images/{item}.jpg" for item in item_ids],
        C.DESCRIPTION: [
            f"{BRANDS[i % len(BRANDS)]} {gender} {colour} {article}"
            for i, gender, colour, article in zip(numbers, *attributes.values())
        ],
        C.CONTENT_HASH: item_ids,
        C.MODEL: [clip.spec.name] * n,
        C.MODEL_VERSION: [clip.version] * n,
        C.ATTRIBUTES: [json.dumps(dict(zip(ATTRIBUTE_COLUMNS, values))) for values in zip(*attributes.values())],
        **attributes,
        C.VECTOR: pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim),
    }
    texts = keyword_texts(pl.DataFrame({C.DESCRIPTION: data[C.DESCRIPTION], **attributes}))
    return pa.RecordBatch.from_pydict({**data, C.KEYWORD_TEXT: texts}, schema=schema)


def _vector_search(table, queries: np.ndarray, truth: np.ndarray) -> dict:
    """Latency and recall@K of the ANN search CatalogSearch runs (same nprobes and refine factor)."""
    params = ann_search_params(table)
    latencies, found = [], 0
    for query, expected in zip(queries, truth):
        search = nearest_query(table, query, params, K).select([C.ITEM_ID, DISTANCE_COLUMN])
        started = time.perf_counter()
        hits = search.to_arrow()
        latencies.append(time.perf_counter() - started)
        rows = {int(item_id.removeprefix("item-")) for item_id in hits[C.ITEM_ID].to_pylist()}
        found += len(rows & set(expected.tolist()))
    return {
        **_percentiles(latencies),
        "queries": len(queries),
        "recall_at_10": found / (K * len(queries)),
        "nprobes": params.nprobes if params else None,
        "refine_factor": params.refine_factor if params else None,
    }


def _deep_vector_search(table, queries: np.ndarray, truth: np.ndarray) -> dict:
    """A search as deep as the service ranks (DEEP_LIMIT hits) with the refine factor chosen for that
    depth against the factor for short searches, interleaved: p50 and recall of the first DEEP_RECALL_AT."""
    params = ann_search_params(table)
    if params is None:
        return {}
    factors = {"chosen": params.refine_factor_for(DEEP_LIMIT), "short_search": params.refine_factor}
    latencies: dict[str, list[float]] = {name: [] for name in factors}
    found = dict.fromkeys(factors, 0)
    for query, expected in zip(queries, truth):
        for name, factor in factors.items():
            search = nearest_query(table, query, AnnSearchParams(params.nprobes, factor), DEEP_LIMIT)
            started = time.perf_counter()
            hits = search.select([C.ITEM_ID, DISTANCE_COLUMN]).to_arrow()[C.ITEM_ID].to_pylist()
            latencies[name].append(time.perf_counter() - started)
            rows = {int(item_id.removeprefix("item-")) for item_id in hits[:DEEP_RECALL_AT]}
            found[name] += len(rows & set(expected[:DEEP_RECALL_AT].tolist()))
    return {
        name: {"refine_factor": factor, "p50_ms": float(np.median(latencies[name]) * 1000),
               f"recall_at_{DEEP_RECALL_AT}": found[name] / (DEEP_RECALL_AT * len(queries))}
        for name, factor in factors.items()
    } | {"limit": DEEP_LIMIT}


def _flat_scan_ms(table, queries: np.ndarray) -> float:
    """Median latency of the exact (index-bypassing) scan LanceDB falls back to without an index."""
    latencies = []
    for query in queries:
        search = nearest_query(table, query, None, K).select([C.ITEM_ID, DISTANCE_COLUMN])
        started = time.perf_counter()
        search.bypass_vector_index().to_arrow()
        latencies.append(time.perf_counter() - started)
    return float(np.median(latencies) * 1000)


def _catalog_search_latency(db_uri: str, clip: LoadedClip, texts: Sequence[str]) -> dict:
    """CatalogSearch.text per query: the first (cold: model load, table handles) and the rest (warm)."""
    with CatalogSearch(db_uri, registry={clip.spec.name: clip.spec}, default_model=clip.spec.name) as search:
        started = time.perf_counter()
        search.text(texts[0], k=K)
        cold = time.perf_counter() - started
        latencies = []
        for text in texts[1:]:
            started = time.perf_counter()
            search.text(text, k=K)
            latencies.append(time.perf_counter() - started)
    return {**_percentiles(latencies), "queries": len(latencies), "first_query_ms": cold * 1000}


def _query_encode_latency(clip: LoadedClip, texts: Sequence[str]) -> dict:
    """encode_texts of one query at a time, and the text tower's weight bytes each query reads.

    One query multiplies a few token vectors by every weight matrix, so its time is bounded by how
    fast the weights stream from memory, not by arithmetic.
    """
    encode_texts(clip, [texts[0]])
    latencies = []
    for text in texts[1:]:
        started = time.perf_counter()
        encode_texts(clip, [text])
        latencies.append(time.perf_counter() - started)
    text_tower = getattr(clip.model, "text", clip.model)
    weights = sum(
        parameter.numel() * parameter.element_size()
        for name, parameter in text_tower.named_parameters()
        if not name.startswith(("visual.", "token_embedding.", "logit_"))
    )
    return {**_percentiles(latencies), "weight_bytes": weights}


def _percentiles(seconds: list[float]) -> dict:
    values = np.asarray(seconds) * 1000
    return {"p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99))}
