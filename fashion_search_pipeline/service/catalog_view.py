"""What the service shows of the catalog, read from the same embedding tables that search reads:
models with tables, one item by id, its stored vector, attribute facets, per-table gauges."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import polars as pl
from lancedb.expr import col
from lancedb.table import Table

from fashion_search_pipeline.columns import (
    CONTENT_HASH,
    DESCRIPTION,
    DROP_ID,
    IMAGE_URI,
    ITEM_ID,
    MODEL_VERSION,
    VECTOR,
)
from fashion_search_pipeline.models.published import read_card
from fashion_search_pipeline.search import CatalogSearch
from fashion_search_pipeline.store.clusters import CLUSTER_ID, CLUSTER_SIZE, VARIANTS
from fashion_search_pipeline.store.tables import ModelTablesMissingError, is_attribute_column, table_name

MAX_ITEM_ID_CHARS = 256
FACET_VALUES = 50  # most frequent values listed per attribute
ITEM_COLUMNS = (ITEM_ID, DROP_ID, DESCRIPTION, IMAGE_URI, CONTENT_HASH, MODEL_VERSION)
# Columns of product_clusters: kept in the tables beside the attributes, but not shopper attributes.
CLUSTER_COLUMNS = frozenset((CLUSTER_ID, CLUSTER_SIZE, VARIANTS))


def is_shopper_attribute(name: str) -> bool:
    """Whether column `name` is a product attribute a shopper sees and filters on."""
    return is_attribute_column(name) and name not in CLUSTER_COLUMNS


class CatalogView:
    """Read-only views of the tables behind a CatalogSearch."""

    def __init__(self, search: CatalogSearch, models_root: Path | None = None):
        self.search = search
        self.models_root = models_root
        self._facets: dict[str, tuple[int, dict]] = {}
        self._lock = threading.Lock()

    def tables(self, model: str) -> dict[str, Table]:
        """The model's open tables by modality (empty when it has none)."""
        try:
            return self.search.tables(model)
        except ModelTablesMissingError:
            return {}

    def attributes(self, model: str) -> list[str]:
        """The attribute columns a filter on `model`'s tables may name."""
        names: list[str] = []
        for table in self.tables(model).values():
            names += [name for name in table.schema.names if is_shopper_attribute(name) and name not in names]
        return names

    def item(self, model: str, item_id: str) -> dict | None:
        """The item's catalog columns and attributes (with its image vector under VECTOR), or None."""
        if not item_id or len(item_id) > MAX_ITEM_ID_CHARS:
            return None
        for table in self.tables(model).values():
            names = table.schema.names
            columns = [c for c in (*ITEM_COLUMNS, VECTOR) if c in names] + [c for c in names if is_attribute_column(c)]
            rows = table.search().where(col(ITEM_ID) == item_id).select(columns).limit(1).to_arrow().to_pylist()
            if rows:
                return rows[0]
        return None

    def item_vector(self, model: str, item_id: str) -> np.ndarray | None:
        """The item's stored image vector (its text vector when it has no image row), or None."""
        found = self.item(model, item_id)
        return None if found is None else np.asarray(found[VECTOR], dtype=np.float32)

    def facets(self, model: str) -> dict[str, list[dict]]:
        """attribute -> its most frequent values with counts, over the model's image table (else text);
        recomputed when the table's version changes."""
        tables = self.tables(model)
        table = tables.get("image") or tables.get("text")
        if table is None:
            return {}
        version = table.version
        with self._lock:
            cached = self._facets.get(model)
        if cached is not None and cached[0] == version:
            return cached[1]
        attributes = [name for name in table.schema.names if is_shopper_attribute(name)]
        facets: dict[str, list[dict]] = {}
        if attributes:
            frame = pl.from_arrow(table.search().select(attributes).limit(None).to_arrow())
            for name in attributes:
                counts = frame[name].drop_nulls().value_counts(sort=True).head(FACET_VALUES)
                facets[name] = [{"value": value, "count": count} for value, count in counts.rows()]
        with self._lock:
            self._facets[model] = (version, facets)
        return facets

    def model_info(self, model: str) -> dict:
        """The model's version, fusion, rows per table and model-card figures (when it has a card)."""
        tables = self.tables(model)
        card = read_card(model, self.models_root)
        return {
            "name": model,
            "fusion": self.search.fusion_for(model),
            "tables": {modality: {"name": table_name(model, modality), "rows": table.count_rows()}
                       for modality, table in tables.items()},
            "card": None if card is None else {"version": card.get("version"), "held_out": card.get("held_out")},
        }

    def table_stats(self) -> list[tuple[str, int, str]]:
        """(table, rows, model version of its first row) for every model's tables."""
        stats = []
        for model in self.search.models_with_tables():
            for modality, table in self.tables(model).items():
                first = table.search().select([MODEL_VERSION]).limit(1).to_arrow()[MODEL_VERSION].to_pylist()
                stats.append((table_name(model, modality), table.count_rows(), first[0] if first else ""))
        return stats
