"""Which fusion strategy each model's searches use, as chosen by the latest retrieval evaluation.

retrieval_evaluation records each evaluated model's best strategy (highest mean MRR over fused
text and image search) in the `fusion_choices` table of the embeddings database. Every
CatalogSearch on that database then follows it without configuration. Models without a
recorded choice use store.fusion.DEFAULT_STRATEGY.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pyarrow as pa

from fashion_search_pipeline.store.fusion import STRATEGIES
from fashion_search_pipeline.store.tables import open_existing_table, retry_commit_conflicts

if TYPE_CHECKING:
    import lancedb

TABLE = "fusion_choices"
SCHEMA = pa.schema([
    pa.field("model", pa.string(), nullable=False),
    pa.field("fusion", pa.string(), nullable=False),
    pa.field("mean_mrr", pa.float64()),
    pa.field("tasks", pa.string()),
    pa.field("evaluated_at", pa.timestamp("us", tz="UTC"), nullable=False),
])


@dataclass(frozen=True)
class FusionChoice:
    """One model's best fusion strategy and the evidence for it."""

    fusion: str
    mean_mrr: float
    tasks: tuple[str, ...]


def record_fusion_choices(db: lancedb.DBConnection, choices: Mapping[str, FusionChoice]) -> None:
    """Replace the recorded choices with `choices` (model name -> choice)."""
    unknown = {model: choice.fusion for model, choice in choices.items() if choice.fusion not in STRATEGIES}
    if unknown:
        raise ValueError(f"unknown fusion strategies {unknown}; choose from {STRATEGIES}")
    now = datetime.now(UTC)
    rows = pa.Table.from_pylist(
        [
            {"model": model, "fusion": choice.fusion, "mean_mrr": choice.mean_mrr,
             "tasks": ",".join(choice.tasks), "evaluated_at": now}
            for model, choice in sorted(choices.items())
        ],
        schema=SCHEMA,
    )
    retry_commit_conflicts(lambda: db.create_table(TABLE, data=rows, schema=SCHEMA, mode="overwrite"))


def read_fusion_choices(db: lancedb.DBConnection) -> dict[str, str]:
    """model name -> recorded fusion strategy; empty when nothing was recorded.

    Rows naming a strategy this version does not know are left out, so their models
    fall back to the default.
    """
    table = open_existing_table(db, TABLE)
    if table is None:
        return {}
    rows = table.to_arrow().select(["model", "fusion"]).to_pylist()
    return {row["model"]: row["fusion"] for row in rows if row["fusion"] in STRATEGIES}
