"""Embedding tables: schema, idempotent upserts, concurrent writers and safe deletions."""

from __future__ import annotations

import threading

import boto3
import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from fashion_search_pipeline.columns import CONTENT_HASH, DESCRIPTION, ITEM_ID, MODEL_VERSION, VECTOR
from fashion_search_pipeline.config import S3Settings
from fashion_search_pipeline.store.tables import (
    ATTRIBUTES,
    SchemaMismatchError,
    connect,
    delete_items,
    embedded_keys,
    embedding_schema,
    open_existing_table,
    table_name,
    upsert_rows,
)

DIM = 8


def embedding_rows(ids, *, dim=DIM, version="v1", attributes=None, seed=0) -> pa.Table:
    """Rows in the embedding-table layout: one per id, random unit vectors."""
    attributes = attributes or {}
    schema = embedding_schema(dim, list(attributes))
    vectors = np.random.default_rng(seed).normal(size=(len(ids), dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    columns = {
        ITEM_ID: list(ids),
        "drop_id": ["d1"] * len(ids),
        "image_uri": [f"file:///images/{item}.jpg" for item in ids],
        DESCRIPTION: [f"description of {item}" for item in ids],
        CONTENT_HASH: [f"hash-{item}-{version}" for item in ids],
        "model": ["tiny"] * len(ids),
        MODEL_VERSION: [version] * len(ids),
        ATTRIBUTES: ["{}"] * len(ids),
        **attributes,
        VECTOR: pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim),
    }
    return pa.table(columns, schema=schema)


def table_rows(db, name) -> pl.DataFrame:
    return pl.from_arrow(db.open_table(name).to_arrow()).sort(ITEM_ID)


@pytest.fixture
def db(tmp_path):
    return connect(str(tmp_path / "lancedb"))


def test_embedding_schema_lists_the_contract_columns():
    schema = embedding_schema(16, ["gender", "colour"])
    assert schema.names == [
        "item_id", "drop_id", "image_uri", "description", "content_hash", "model", "model_version",
        "attributes", "gender", "colour", "vector",
    ]
    assert all(schema.field(name).type == pa.utf8() for name in schema.names if name != VECTOR)
    assert schema.field(VECTOR).type == pa.list_(pa.float32(), 16)


@pytest.mark.parametrize("names", [["gender", "description"], ["attributes"], ["colour", "colour"]])
def test_embedding_schema_rejects_clashing_attribute_names(names):
    with pytest.raises(ValueError, match="attribute names"):
        embedding_schema(16, names)


def test_table_name_joins_model_and_modality():
    assert table_name("fashion-clip", "image") == "fashion-clip__image"


def test_upsert_creates_the_table_and_a_rerun_adds_nothing(db):
    rows = embedding_rows(["a", "b", "c"])
    assert upsert_rows(db, "m__image", rows) == 3
    assert upsert_rows(db, "m__image", rows) == 3
    stored = table_rows(db, "m__image")
    assert stored[ITEM_ID].to_list() == ["a", "b", "c"]
    assert stored.schema[VECTOR] == pl.Array(pl.Float32, DIM)


def test_upsert_replaces_matched_items_and_inserts_new_ones(db):
    upsert_rows(db, "m__text", embedding_rows(["a", "b"], version="v1"))
    upsert_rows(db, "m__text", embedding_rows(["b", "c"], version="v2", seed=1))
    stored = table_rows(db, "m__text")
    assert stored[ITEM_ID].to_list() == ["a", "b", "c"]
    assert stored[MODEL_VERSION].to_list() == ["v1", "v2", "v2"]
    expected_b = embedding_rows(["b", "c"], version="v2", seed=1)[VECTOR][0].as_py()
    assert stored.filter(pl.col(ITEM_ID) == "b")[VECTOR][0].to_list() == pytest.approx(expected_b)


def test_upsert_adds_new_attribute_columns_and_null_fills_missing_ones(db):
    upsert_rows(db, "m__image", embedding_rows(["a"], attributes={"gender": ["Women"]}))
    upsert_rows(db, "m__image", embedding_rows(["b"], attributes={"colour": ["Red"]}))
    stored = table_rows(db, "m__image")
    assert {"gender", "colour"} <= set(stored.columns)
    assert stored.select(ITEM_ID, "gender", "colour").rows() == [("a", "Women", None), ("b", None, "Red")]


def test_upsert_accepts_polars_text_columns(db):
    rows = embedding_rows(["a", "b"])
    frame = pl.from_arrow(rows).with_columns(pl.Series("season", ["Summer", None]))
    assert upsert_rows(db, "m__image", frame.to_arrow()) == 2
    stored = table_rows(db, "m__image")
    assert stored["season"].to_list() == ["Summer", None]
    assert db.open_table("m__image").schema.field("season").type == pa.utf8()


def test_upsert_rejects_a_vector_of_another_size_naming_the_table(db):
    upsert_rows(db, "m__image", embedding_rows(["a"]))
    with pytest.raises(SchemaMismatchError, match=r"'vector'.*'m__image'"):
        upsert_rows(db, "m__image", embedding_rows(["b"], dim=DIM * 2))
    assert table_rows(db, "m__image")[ITEM_ID].to_list() == ["a"]


def test_upsert_rejects_rows_missing_a_required_column(db):
    upsert_rows(db, "m__image", embedding_rows(["a"]))
    with pytest.raises(SchemaMismatchError, match="lack the column 'content_hash'"):
        upsert_rows(db, "m__image", embedding_rows(["b"]).drop_columns([CONTENT_HASH]))


def test_upsert_rejects_repeated_and_null_item_ids(db):
    rows = embedding_rows(["a", "a", "b"])
    with pytest.raises(SchemaMismatchError, match=r"repeat 1 item_id.*\['a'\]"):
        upsert_rows(db, "m__image", rows)
    with_null = embedding_rows(["a", "b"]).set_column(0, ITEM_ID, pa.array(["a", None]))
    with pytest.raises(SchemaMismatchError, match="null item_id"):
        upsert_rows(db, "m__image", with_null)
    assert open_existing_table(db, "m__image") is None


def test_upsert_rejects_variable_length_vectors(db):
    rows = embedding_rows(["a"])
    listed = rows.set_column(rows.schema.get_field_index(VECTOR), VECTOR, pa.array([[0.1] * DIM], pa.list_(pa.float32())))
    with pytest.raises(SchemaMismatchError, match="fixed-size list"):
        upsert_rows(db, "m__image", listed)


def test_empty_upsert_writes_nothing(db):
    assert upsert_rows(db, "m__image", embedding_rows([])) == 0
    assert open_existing_table(db, "m__image") is None


@pytest.mark.parametrize("shared_connection", [True, False], ids=["shared-connection", "own-connections"])
def test_concurrent_upserts_of_disjoint_rows_lose_nothing(tmp_path, shared_connection):
    uri = str(tmp_path / "lancedb")
    shared = connect(uri)
    batches = {
        "left": [embedding_rows([f"l{i}-{j}" for j in range(5)], attributes={"gender": ["Women"] * 5}, seed=i)
                 for i in range(6)],
        "right": [embedding_rows([f"r{i}-{j}" for j in range(5)], attributes={"colour": ["Blue"] * 5}, seed=10 + i)
                  for i in range(6)],
    }
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def writer(side):
        db = shared if shared_connection else connect(uri)
        start.wait()
        try:
            for rows in batches[side]:
                upsert_rows(db, "m__image", rows)
        except BaseException as error:  # reported below, with the thread's traceback
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(side,)) for side in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    stored = table_rows(connect(uri), "m__image")
    assert stored.height == 60
    assert stored[ITEM_ID].n_unique() == 60
    assert stored.filter(pl.col(ITEM_ID).str.starts_with("l"))["gender"].to_list() == ["Women"] * 30
    assert stored.filter(pl.col(ITEM_ID).str.starts_with("r"))["colour"].to_list() == ["Blue"] * 30


def test_embedded_keys_of_a_missing_table_is_empty_with_the_key_columns(db):
    keys = embedded_keys(db, "nothing__image")
    assert keys.height == 0
    assert keys.columns == [ITEM_ID, CONTENT_HASH, MODEL_VERSION]


def test_embedded_keys_lists_every_stored_item(db):
    upsert_rows(db, "m__text", embedding_rows(["a", "b"], version="v7"))
    keys = embedded_keys(db, "m__text").sort(ITEM_ID)
    assert keys.rows() == [("a", "hash-a-v7", "v7"), ("b", "hash-b-v7", "v7")]


AWKWARD_IDS = ["plain", "it's", "x') OR ('1'='1", "back\\slash", "tail\\", 'double"quote', "new\nline", "ünï", "%_"]


def test_delete_items_quotes_ids_safely(db):
    upsert_rows(db, "m__image", embedding_rows(AWKWARD_IDS))
    doomed = ["it's", "x') OR ('1'='1", "back\\slash", "tail\\", "absent'id"]
    assert delete_items(db, "m__image", doomed) == 4
    remaining = table_rows(db, "m__image")[ITEM_ID].to_list()
    assert sorted(remaining) == sorted(set(AWKWARD_IDS) - set(doomed))


def test_delete_items_of_a_missing_table_or_no_ids_deletes_nothing(db):
    assert delete_items(db, "m__image", ["a"]) == 0
    upsert_rows(db, "m__image", embedding_rows(["a"]))
    assert delete_items(db, "m__image", []) == 0
    assert table_rows(db, "m__image").height == 1


def test_upserts_and_deletions_work_the_same_on_s3(s3_endpoint):
    boto3.client(
        "s3",
        endpoint_url=s3_endpoint["endpoint_url"],
        region_name=s3_endpoint["region"],
        aws_access_key_id=s3_endpoint["key"],
        aws_secret_access_key=s3_endpoint["secret"],
    ).create_bucket(Bucket="store-tables")
    settings = S3Settings(
        endpoint_url=s3_endpoint["endpoint_url"],
        region=s3_endpoint["region"],
        access_key_id=s3_endpoint["key"],
        secret_access_key=s3_endpoint["secret"],
    )
    db = connect("s3://store-tables/lancedb", settings.lancedb_options())
    assert upsert_rows(db, "m__image", embedding_rows(["a", "it's"])) == 2
    assert upsert_rows(db, "m__image", embedding_rows(["it's", "c"], version="v2")) == 2
    keys = embedded_keys(db, "m__image").sort(ITEM_ID)
    assert keys.select(ITEM_ID, MODEL_VERSION).rows() == [("a", "v1"), ("c", "v2"), ("it's", "v2")]
    assert delete_items(db, "m__image", ["it's"]) == 1
    assert sorted(connect("s3://store-tables/lancedb", settings.lancedb_options()).open_table("m__image")
                  .to_arrow()[ITEM_ID].to_pylist()) == ["a", "c"]
