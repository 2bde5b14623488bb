"""Search indexes of an embedding table, chosen by its size.

Below `min_rows_for_ann` rows an exact (flat) scan is both exact and fast
(about 10 ms for 10k x 512 floats), so no vector index is built. Up to a million
rows IVF_HNSW_SQ (8-bit scalar quantisation, an HNSW graph per partition) gives
high recall at a quarter of the vector size; beyond that IVF_PQ compresses each
vector to a few dozen bytes. Queries re-rank quantised candidates with the exact
vectors (refine_factor), which recovers the recall quantisation loses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lancedb.index import FTS, BTree, HnswSq, IvfPq
from lancedb.table import Table

from fashion_search_pipeline.columns import DESCRIPTION, ITEM_ID, VECTOR
from fashion_search_pipeline.store.tables import retry_commit_conflicts

DEFAULT_MIN_ROWS_FOR_ANN = 10_000
IVF_PQ_MIN_ROWS = 1_000_000
DISTANCE_TYPE = "cosine"

HNSW_SQ = "IVF_HNSW_SQ"
IVF_PQ = "IVF_PQ"
# LanceDB's list_indices() names for the index types built here.
_LISTED_TYPES = {"IvfHnswSq": HNSW_SQ, "IvfPq": IVF_PQ}

MIN_NPROBES = 20
REFINE_FACTOR = {HNSW_SQ: 5, IVF_PQ: 10}


@dataclass(frozen=True)
class VectorIndexPlan:
    """The ANN index to build for a table of a given size."""

    index_type: str
    num_partitions: int
    num_sub_vectors: int | None = None

    def config(self) -> HnswSq | IvfPq:
        """The LanceDB index configuration (cosine distance)."""
        if self.index_type == HNSW_SQ:
            return HnswSq(distance_type=DISTANCE_TYPE, num_partitions=self.num_partitions)
        return IvfPq(
            distance_type=DISTANCE_TYPE,
            num_partitions=self.num_partitions,
            num_sub_vectors=self.num_sub_vectors,
        )


@dataclass(frozen=True)
class AnnSearchParams:
    """Query-time settings for a table's ANN index."""

    nprobes: int
    refine_factor: int


def plan_vector_index(
    num_rows: int, dim: int, *, min_rows_for_ann: int = DEFAULT_MIN_ROWS_FOR_ANN
) -> VectorIndexPlan | None:
    """The ANN index for `num_rows` vectors of size `dim`; None: exact search is better."""
    if num_rows < max(min_rows_for_ann, 1):
        return None
    num_partitions = _partitions_for(num_rows)
    if num_rows < IVF_PQ_MIN_ROWS:
        return VectorIndexPlan(HNSW_SQ, num_partitions)
    return VectorIndexPlan(IVF_PQ, num_partitions, _sub_vectors_for(dim))


def ann_search_params(table: Table) -> AnnSearchParams | None:
    """nprobes and refine_factor for the table's vector index; None when it has none."""
    index = _vector_index(table)
    if index is None:
        return None
    index_type = _LISTED_TYPES.get(index.index_type, IVF_PQ)
    partitions = _partitions_for(max(index.num_indexed_rows or 1, 1))
    return AnnSearchParams(
        nprobes=max(MIN_NPROBES, math.ceil(partitions / 20)),
        refine_factor=REFINE_FACTOR[index_type],
    )


def ensure_indexes(table: Table, *, min_rows_for_ann: int = DEFAULT_MIN_ROWS_FOR_ANN) -> dict:
    """Bring the table's indexes up to date and report what was done.

    A BTREE index on item_id (upserts, deletions, lookups), a full-text index on
    description, and a cosine ANN index on vector once the table has
    `min_rows_for_ann` rows (rebuilt when the table outgrows its index type).
    Rows written since an index was built are folded in by `optimize()`.
    """
    num_rows = table.count_rows()
    columns = table.schema.names
    existing = {tuple(index.columns): index for index in table.list_indices()}
    report: dict = {"rows": num_rows}

    report["item_id_index"] = _ensure_simple_index(table, existing, ITEM_ID, BTree())
    if DESCRIPTION in columns:
        report["description_index"] = _ensure_simple_index(table, existing, DESCRIPTION, FTS())

    dim = table.schema.field(VECTOR).type.list_size
    plan = plan_vector_index(num_rows, dim, min_rows_for_ann=min_rows_for_ann)
    current = existing.get((VECTOR,))
    report["vector_index"] = _LISTED_TYPES.get(current.index_type, current.index_type) if current else None
    report["vector_index_action"] = "none (exact search)" if current is None else "present"
    if plan is not None and (current is None or _needs_rebuild(table, current, plan)):
        retry_commit_conflicts(lambda: table.create_index(VECTOR, config=plan.config(), replace=True))
        report["vector_index"] = plan.index_type
        report["vector_index_action"] = "created" if current is None else "rebuilt"
        report["num_partitions"] = plan.num_partitions
        if plan.num_sub_vectors is not None:
            report["num_sub_vectors"] = plan.num_sub_vectors

    stale = [index.name for index in table.list_indices() if index.num_unindexed_rows]
    if stale:
        retry_commit_conflicts(table.optimize)
    report["optimized"] = bool(stale)
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


def _vector_index(table: Table):
    for index in table.list_indices():
        if tuple(index.columns) == (VECTOR,):
            return index
    return None


def _partitions_for(num_rows: int) -> int:
    return max(1, round(math.sqrt(num_rows)))


def _sub_vectors_for(dim: int) -> int:
    """The largest divisor of `dim` that is at most dim/8 (8+ dims per PQ code)."""
    target = max(1, dim // 8)
    return next(d for d in range(target, 0, -1) if dim % d == 0)
