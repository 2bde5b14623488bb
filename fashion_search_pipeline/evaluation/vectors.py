"""A model's embedding vectors read back from its LanceDB tables, aligned item by item."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import pyarrow as pa

from fashion_search_pipeline.columns import DESCRIPTION, IMAGE_URI, ITEM_ID, MODEL_VERSION, VECTOR
from fashion_search_pipeline.store.tables import (
    ModelTablesMissingError,
    is_attribute_column,
    open_existing_table,
    table_name,
)

if TYPE_CHECKING:
    import lancedb

_READ_COLUMNS = (ITEM_ID, IMAGE_URI, DESCRIPTION, MODEL_VERSION, VECTOR)


@dataclass(frozen=True)
class ModelVectors:
    """One model's unit vectors for the items present in both of its tables.

    Row i of `image` and `text` and of `items` (item_id, image_uri, description,
    attribute columns) is the same item; rows are sorted by item_id, so index order
    is item_id order (the tie-break of store.fusion). `unpaired` counts items found
    in one table only (left out); `versions` are the model versions that wrote the rows.
    """

    model: str
    items: pl.DataFrame
    image: np.ndarray
    text: np.ndarray
    unpaired: int
    versions: frozenset[str]

    @property
    def item_ids(self) -> list[str]:
        """Item ids in row order."""
        return self.items[ITEM_ID].to_list()

    def subset(self, item_ids: Collection[str]) -> ModelVectors:
        """The same model's vectors for only the listed items (in the same row order)."""
        keep = np.flatnonzero(self.items[ITEM_ID].is_in(list(item_ids)).to_numpy())
        return dataclasses.replace(
            self, items=self.items[keep.tolist()], image=self.image[keep], text=self.text[keep], unpaired=0
        )


def read_model_vectors(db: lancedb.DBConnection, model: str) -> ModelVectors:
    """Read `<model>__image` and `<model>__text` and pair their rows by item_id."""
    frames = {}
    for modality in ("image", "text"):
        name = table_name(model, modality)
        table = open_existing_table(db, name)
        if table is None:
            raise ModelTablesMissingError(
                f"model {model!r} has no table {name!r}; materialize its embeddings first"
            )
        frames[modality] = _table_frame(table.to_arrow(), name)
    image, text = frames["image"], frames["text"]
    payload = [c for c in text.columns if c not in (VECTOR, MODEL_VERSION)]
    paired = (
        text.select(*payload, pl.col(VECTOR).alias("text_vector"))
        .join(image.select(ITEM_ID, pl.col(VECTOR).alias("image_vector")), on=ITEM_ID, how="inner")
        .sort(ITEM_ID)
    )
    unpaired = image.height + text.height - 2 * paired.height
    return ModelVectors(
        model=model,
        items=paired.select(payload),
        image=_unit_matrix(paired["image_vector"]),
        text=_unit_matrix(paired["text_vector"]),
        unpaired=unpaired,
        versions=frozenset(v for frame in frames.values() for v in frame[MODEL_VERSION].unique().to_list() if v),
    )


def _table_frame(rows: pa.Table, name: str) -> pl.DataFrame:
    missing = [c for c in (ITEM_ID, VECTOR) if c not in rows.column_names]
    if missing:
        raise ValueError(f"table {name!r} lacks the columns {missing}")
    keep = [c for c in rows.column_names if c in _READ_COLUMNS or is_attribute_column(c)]
    frame = pl.from_arrow(rows.select(keep))
    return frame if MODEL_VERSION in frame.columns else frame.with_columns(pl.lit(None, pl.Utf8).alias(MODEL_VERSION))


def _unit_matrix(vectors: pl.Series) -> np.ndarray:
    """(n, dim) float32 rows scaled to unit length (zero rows stay zero)."""
    if vectors.len() == 0:
        return np.zeros((0, 0), dtype=np.float32)
    matrix = vectors.to_numpy().astype(np.float32, copy=False).reshape(vectors.len(), -1)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)
