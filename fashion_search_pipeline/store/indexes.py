"""Search indexes of an embedding table, chosen by its size.

Below `min_rows_for_ann` rows an exact (flat) scan is both exact and fast
(about 10 ms for 10k x 512 floats), so no vector index is built. Up to a million
rows IVF_HNSW_SQ (8-bit scalar quantisation, an HNSW graph per partition) gives
high recall at a quarter of the vector size. From a million rows on, IVF_RQ
(RaBitQ with 4 bits per dimension, an eighth of the vector size, no codebook to
train) in partitions of about 8,192 rows: it indexes a million 512-d vectors in
about a minute of CPU time, where IVF_PQ with sqrt(n) partitions took over four
(its codebook training dominates), and 4 bits keep recall high even on vectors
without cluster structure, where 1-bit RaBitQ and 8-bit PQ fall below 0.6.
Queries re-rank quantised candidates with the exact vectors (refine_factor), which
recovers the recall quantisation loses: recall@10 0.997 on a million clustered
512-d vectors (`make bench`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa

from fashion_search_pipeline.columns import ITEM_ID, KEYWORD_TEXT, VECTOR
from fashion_search_pipeline.store.keyword import fill_keyword_text
from fashion_search_pipeline.store.tables import retry_commit_conflicts

if TYPE_CHECKING:
    from lancedb.index import HnswSq, IvfRq
    from lancedb.query import LanceQueryBuilder
    from lancedb.table import Table

DEFAULT_MIN_ROWS_FOR_ANN = 10_000
IVF_RQ_MIN_ROWS = 1_000_000
DISTANCE_TYPE = "cosine"
# The column LanceDB adds to vector search results.
DISTANCE_COLUMN = "_distance"

HNSW_SQ = "IVF_HNSW_SQ"
IVF_RQ = "IVF_RQ"
# LanceDB's list_indices() names for the index types built here.
_LISTED_TYPES = {"IvfHnswSq": HNSW_SQ, "IvfRq": IVF_RQ}

# IVF_RQ partitions hold about this many rows (LanceDB's own default target size),
# and each dimension is coded in this many bits.
RQ_PARTITION_ROWS = 8_192
RQ_BITS = 4
# k-means iterations for the IVF_RQ partitions: recall@10 at a million rows is the same
# as with LanceDB's default of 50, at a fraction of the build time.
RQ_KMEANS_ITERATIONS = 20

MIN_NPROBES = 20
# Candidates re-ranked with exact vectors, per result wanted, for searches of up to REFINE_BASE_RESULTS
# results. At a million clustered rows and 30 results, IVF_RQ's recall@10 is 0.997 with a factor of 2, 5
# or 10 alike; 5 keeps a margin and costs 11.2 ms per search against 13.2 ms for 10 (payload columns
# included). A deeper search re-ranks that many candidates (150) or its own results, whichever is more:
# at a million rows, 300 results re-ranked 1x or 5x both have recall@10 0.985 and recall@100 0.962,
# in 16 against 43 ms (docs/performance.md).
REFINE_FACTOR = {HNSW_SQ: 5, IVF_RQ: 5}
REFINE_BASE_RESULTS = 30
# For a vector index built some other way (an IVF_PQ from an earlier version, until
# ensure_indexes rebuilds it): re-rank generously.
DEFAULT_REFINE_FACTOR = 10


@dataclass(frozen=True)
class VectorIndexPlan:
    """The ANN index to build for a table of a given size."""

    index_type: str
    num_partitions: int

    def config(self) -> HnswSq | IvfRq:
        """The LanceDB index configuration (cosine distance)."""
        from lancedb.index import HnswSq, IvfRq
        if self.index_type == HNSW_SQ:
            return HnswSq(distance_type=DISTANCE_TYPE, num_partitions=self.num_partitions)
        return IvfRq(
            distance_type=DISTANCE_TYPE,
            num_partitions=self.num_partitions,
            num_bits=RQ_BITS,
            max_iterations=RQ_KMEANS_ITERATIONS,
        )


@dataclass(frozen=True)
class AnnSearchParams:
    """Query-time settings for a table's ANN index."""

    nprobes: int
    refine_factor: int

    def refine_factor_for(self, limit: int) -> int:
        """The refine factor of a search for `limit` results: `refine_factor` up to REFINE_BASE_RESULTS
        results, then as many as re-rank the same number of candidates (at least the results)."""
        budget = self.refine_factor * REFINE_BASE_RESULTS
        return max(1, min(self.refine_factor, math.ceil(budget / max(limit, 1))))


def plan_vector_index(num_rows: int, *, min_rows_for_ann: int = DEFAULT_MIN_ROWS_FOR_ANN) -> VectorIndexPlan | None:
    """The ANN index for a table of `num_rows` vectors; None: exact search is better."""
    if num_rows < max(min_rows_for_ann, 1):
        return None
    index_type = IVF_RQ if num_rows >= IVF_RQ_MIN_ROWS else HNSW_SQ
    return VectorIndexPlan(index_type, _partitions_for(index_type, num_rows))


def ann_search_params(table: Table) -> AnnSearchParams | None:
    """nprobes and refine_factor for the table's vector index; None when it has none."""
    index = vector_index(table)
    if index is None:
        return None
    index_type = _LISTED_TYPES.get(index.index_type)
    partitions = _partitions_for(index_type, max(index.num_indexed_rows or 1, 1))
    return AnnSearchParams(
        nprobes=max(MIN_NPROBES, math.ceil(partitions / 20)),
        refine_factor=REFINE_FACTOR.get(index_type, DEFAULT_REFINE_FACTOR),
    )


def nearest_query(
    table: Table, vector, params: AnnSearchParams | None, limit: int, *, filtered: bool = False
) -> LanceQueryBuilder:
    """A cosine vector search for the `limit` nearest rows of `table`, with its ANN settings (exact when
    `params` is None).

    It probes `params.nprobes` partitions. With a filter (`filtered`), it goes on probing
    until enough rows pass, since the first partitions may hold too few. Without one, the
    first partitions hold enough, and probing on only costs time: twice the latency at a
    million rows for queries far from the partition centres.
    """
    search = table.search(vector, vector_column_name=VECTOR).distance_type(DISTANCE_TYPE).limit(limit)
    if params is None:
        return search
    return (
        search.minimum_nprobes(params.nprobes)
        .maximum_nprobes(0 if filtered else params.nprobes)
        .refine_factor(params.refine_factor_for(limit))
    )


def ensure_indexes(table: Table, *, min_rows_for_ann: int = DEFAULT_MIN_ROWS_FOR_ANN) -> dict:
    """Bring the table's indexes up to date and report what was done.

    A BTREE index on item_id (upserts, deletions, lookups), a full-text (BM25) index on
    keyword_text (the keyword leg of hybrid search, see store.keyword; the column is added to a
    table from before it, and its null rows are filled first), and a cosine ANN index on vector
    once the table has `min_rows_for_ann` rows (rebuilt when the table outgrows its index type).
    Rows written since an index was built are folded in by `optimize()`, so a new
    drop's items are found by keyword right after the embeddings run. The caller holds the
    table's write lock.
    """
    from lancedb.index import FTS, BTree
    num_rows = table.count_rows()
    columns = table.schema.names
    existing = {tuple(index.columns): index for index in table.list_indices()}
    report: dict = {"rows": num_rows}

    report["item_id_index"] = _ensure_simple_index(table, existing, ITEM_ID, BTree())
    if KEYWORD_TEXT not in columns:  # a table from before the column: it gets it here, once
        retry_commit_conflicts(lambda: table.add_columns([pa.field(KEYWORD_TEXT, pa.utf8())]))
    report["keyword_text_filled"] = fill_keyword_text(table)
    if report["keyword_text_filled"]:
        # The fill rewrote those rows: compact them before indexing (an ANN index built over
        # the rewritten, not yet compacted rows measured recall@10 0.92 against 1.00).
        retry_commit_conflicts(table.optimize)
    report["keyword_index"] = _ensure_simple_index(table, existing, KEYWORD_TEXT, FTS())
    # Full-text indexes of a table from before keyword_text (description, each attribute): unused now.
    report["keyword_indexes_dropped"] = [
        index.name for index in table.list_indices()
        if index.index_type == "FTS" and list(index.columns) != [KEYWORD_TEXT]
    ]
    for name in report["keyword_indexes_dropped"]:
        retry_commit_conflicts(lambda name=name: table.drop_index(name))

    plan = plan_vector_index(num_rows, min_rows_for_ann=min_rows_for_ann)
    current = existing.get((VECTOR,))
    report["vector_index"] = _LISTED_TYPES.get(current.index_type, current.index_type) if current else None
    report["vector_index_action"] = "none (exact search)" if current is None else "present"
    if plan is not None and (current is None or _needs_rebuild(table, current, plan)):
        retry_commit_conflicts(lambda: table.create_index(VECTOR, config=plan.config(), replace=True))
        report["vector_index"] = plan.index_type
        report["vector_index_action"] = "created" if current is None else "rebuilt"
        report["num_partitions"] = plan.num_partitions

    stale = [index.name for index in table.list_indices() if index.num_unindexed_rows]
    if stale:
        retry_commit_conflicts(table.optimize)
    report["optimized"] = bool(stale or report.get("keyword_text_filled"))
    return report


def _ensure_simple_index(table: Table, existing: dict, column: str, config) -> str:
    if (column,) in existing:
        return "present"
    retry_commit_conflicts(lambda: table.create_index(column, config=config, replace=True))
    return "created"


def _needs_rebuild(table: Table, current, plan: VectorIndexPlan) -> bool:
    if _LISTED_TYPES.get(current.index_type) != plan.index_type:
        return True
    stats = table.index_stats(current.name)
    return stats is not None and (stats.distance_type or "").lower() != DISTANCE_TYPE


def vector_index(table: Table):
    """The table's index on the vector column, or None."""
    for index in table.list_indices():
        if tuple(index.columns) == (VECTOR,):
            return index
    return None


def _partitions_for(index_type: str | None, num_rows: int) -> int:
    if index_type == IVF_RQ:
        return max(1, math.ceil(num_rows / RQ_PARTITION_ROWS))
    return max(1, round(math.sqrt(num_rows)))
