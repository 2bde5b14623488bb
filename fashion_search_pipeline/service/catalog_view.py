"""What the service shows of the catalog, read from the same embedding tables that search reads:
models with tables, one item by id, its variants, attribute facets, per-table gauges."""

from __future__ import annotations

import threading
from pathlib import Path

import polars as pl
import pyarrow as pa
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
from fashion_search_pipeline.store.clusters import CLUSTER_ID
from fashion_search_pipeline.store.tables import ModelTablesMissingError, is_attribute_column, table_name

MAX_ITEM_ID_CHARS = 256
MAX_VARIANTS = 100  # variants listed per item
FACET_VALUES = 50  # most frequent values listed per attribute
ITEM_COLUMNS = (ITEM_ID, DROP_ID, DESCRIPTION, IMAGE_URI, CONTENT_HASH, MODEL_VERSION)


def shopper_attributes(schema: pa.Schema) -> list[str]:
    """The columns of `schema` a shopper sees and filters on: the text attribute columns (catalog
    attributes and zero-shot facets), not the numbers beside them (cluster ids and sizes, tag confidences)."""
    return [field.name for field in schema
            if is_attribute_column(field.name) and (pa.types.is_string(field.type) or pa.types.is_large_string(field.type))]


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
            names += [name for name in shopper_attributes(table.schema) if name not in names]
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

    def variants(self, model: str, item_id: str) -> list[dict] | None:
        """The other items of the item's variant cluster (product_clusters), by item id; None when
        the item is unknown, [] when it has no cluster."""
        found = self.item(model, item_id)
        if found is None:
            return None
        cluster = found.get(CLUSTER_ID)
        if cluster is None:
            return []
        tables = self.tables(model)
        table = tables.get("image") or tables.get("text")
        names = table.schema.names
        columns = [c for c in ITEM_COLUMNS if c in names] + [c for c in names if is_attribute_column(c)]
        rows = (table.search().where((col(CLUSTER_ID) == cluster) & (col(ITEM_ID) != found[ITEM_ID]))
                .select(columns).limit(MAX_VARIANTS).to_arrow().to_pylist())
        return sorted(rows, key=lambda row: row[ITEM_ID])

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
        attributes = shopper_attributes(table.schema)
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
