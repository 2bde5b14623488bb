"""CatalogSearch against real LanceDB tables embedded by a tiny random-weight CLIP loaded from a checkpoint."""

from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path

import boto3
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from fashion_search_pipeline.columns import ATTRIBUTES, ITEM_ID, MATCHED, RANK, SCORE
from fashion_search_pipeline.config import S3Settings
from fashion_search_pipeline.models.checkpoints import TINY_CONFIG, write_random_checkpoint
from fashion_search_pipeline.models.encoders import encode_images, encode_texts
from fashion_search_pipeline.models.loading import checkpoint_fingerprint, load_clip
from fashion_search_pipeline.models.registry import ARCHITECTURE_FILE, CHECKPOINT_FILE, ModelSpec
from fashion_search_pipeline.search import (
    READ_CONSISTENCY,
    CatalogSearch,
    ModelTablesMissingError,
    ReembeddingInProgressError,
)
from fashion_search_pipeline.store.indexes import ann_search_params, ensure_indexes
from fashion_search_pipeline.store.tables import connect, embedding_schema, table_name, upsert_rows

MODEL = "tiny"
ATTRIBUTE_NAMES = ["gender", "colour"]
OUTPUT_COLUMNS = ["item_id", "image_uri", "description", "gender", "colour", "score", "matched", "rank"]
ITEMS = [
    ("dress-01", "red floral summer dress with thin straps", "Women", "Red", (200, 30, 40)),
    ("shirt-02", "navy blue oxford shirt, slim fit, button-down collar", "Men", "Navy", (20, 30, 120)),
    ("heels-03", "black leather heels", "Women", "Black", (15, 15, 15)),
    ("cap-04", "green baseball cap", "Men", "Green", (30, 160, 40)),
    ("scarf-05", "soft yellow wool scarf for cold winter days in the mountains", "Women", "Yellow", (230, 210, 20)),
    ("jeans-06", "washed denim jeans", "Men", "Blue", (60, 90, 160)),
    ("bag-07", "white canvas tote bag with long handles and an inner pocket", "Women", "White", (245, 245, 240)),
    ("socks-08", "pack of three grey sports socks", "Unisex", "Grey", (128, 128, 128)),
]


def product_photo(index: int, colour) -> bytes:
    """A distinct small JPEG: a coloured garment shape on a patterned background."""
    rng = np.random.default_rng(index)
    pixels = rng.integers(0, 255, size=(48, 48, 3), dtype=np.uint8)
    pixels[8 + index : 40, 10 : 38 - index] = colour
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def embedding_table_rows(spec: ModelSpec, clip, items, vectors: np.ndarray, image_dir) -> pa.Table:
    """Rows in the contract's embedding-table layout."""
    columns = {
        "item_id": [item[0] for item in items],
        "drop_id": ["2026-11-01"] * len(items),
        "image_uri": [str(image_dir / f"{item[0]}.jpg") for item in items],
        "description": [item[1] for item in items],
        "content_hash": [f"hash-{item[0]}" for item in items],
        "model": [spec.name] * len(items),
        "model_version": [clip.version] * len(items),
        ATTRIBUTES: [json.dumps({"gender": item[2], "colour": item[3]}) for item in items],
        "gender": [item[2] for item in items],
        "colour": [item[3] for item in items],
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), clip.embed_dim),
    }
    return pa.table(columns, schema=embedding_schema(clip.embed_dim, ATTRIBUTE_NAMES))


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    """A database with tiny__image and tiny__text tables for ITEMS, the model spec and the photos."""
    root = tmp_path_factory.mktemp("search")
    checkpoint = write_random_checkpoint(TINY_CONFIG, root / "tiny.pt", seed=0)
    spec = ModelSpec(MODEL, str(TINY_CONFIG), pretrained=str(checkpoint), precision="fp32", batch_size=4)
    clip = load_clip(spec)
    image_dir = root / "images"
    image_dir.mkdir()
    photos = {}
    for index, (item_id, *_, colour) in enumerate(ITEMS):
        photos[item_id] = product_photo(index, colour)
        (image_dir / f"{item_id}.jpg").write_bytes(photos[item_id])
    db = connect(str(root / "lancedb"))
    image_vectors = encode_images(clip, [photos[item[0]] for item in ITEMS])
    text_vectors = encode_texts(clip, [item[1] for item in ITEMS])
    upsert_rows(db, table_name(MODEL, "image"), embedding_table_rows(spec, clip, ITEMS, image_vectors, image_dir))
    upsert_rows(db, table_name(MODEL, "text"), embedding_table_rows(spec, clip, ITEMS, text_vectors, image_dir))
    return {"db_uri": str(root / "lancedb"), "spec": spec, "clip": clip, "photos": photos, "image_dir": image_dir}


@pytest.fixture(scope="module")
def search(catalog):
    with CatalogSearch(catalog["db_uri"], registry={MODEL: catalog["spec"]}) as catalog_search:
        yield catalog_search


@pytest.mark.parametrize("item", ITEMS, ids=[item[0] for item in ITEMS])
def test_an_items_exact_description_finds_it_first_in_the_text_table(search, item):
    hits = search.text(item[1], fusion="text")
    assert hits[ITEM_ID][0] == item[0]
    assert hits[SCORE][0] == pytest.approx(1.0, abs=1e-4)
    assert set(hits[MATCHED]) == {"text"}


@pytest.mark.parametrize("item", ITEMS[:3], ids=[item[0] for item in ITEMS[:3]])
def test_an_items_exact_photo_finds_it_first(search, catalog, item):
    photo = catalog["photos"][item[0]]
    for strategy in ("image", "raw"):
        hits = search.image(photo, fusion=strategy)
        assert hits[ITEM_ID][0] == item[0]
        assert hits[SCORE][0] == pytest.approx(1.0, abs=1e-4)


def test_results_have_one_row_per_product_and_the_documented_columns(search):
    hits = search.text("summer dress", k=len(ITEMS))
    assert hits.columns == OUTPUT_COLUMNS
    assert hits.height == len(ITEMS)
    assert hits[ITEM_ID].n_unique() == len(ITEMS)
    assert hits[RANK].to_list() == list(range(1, len(ITEMS) + 1))
    assert hits[SCORE].to_list() == sorted(hits[SCORE].to_list(), reverse=True)
    # both tables return every product here, so every row was matched by both (and by the keyword
    # leg of the default fusion, hybrid, where a description has a query word)
    assert {"image+text", "image+text+keyword"} >= set(hits[MATCHED]) >= {"image+text"}
    expected = {item[0]: (item[1], item[2], item[3]) for item in ITEMS}
    assert {row[0]: row[2:5] for row in hits.rows()} == expected


def test_k_limits_the_number_of_products(search):
    assert search.text("a dress", k=3).height == 3


def test_where_filters_on_an_attribute_before_the_search(search):
    women = {item[0] for item in ITEMS if item[2] == "Women"}
    for strategy in ("rrf", "image", "text", "weighted"):
        hits = search.text("a dress", k=10, where="gender = 'Women'", fusion=strategy)
        assert set(hits["gender"]) == {"Women"}
        assert set(hits[ITEM_ID]) == women


def test_a_filter_on_an_unknown_column_names_the_filter_and_table(search):
    with pytest.raises(ValueError, match=r"filter \"season = 'Summer'\" cannot be applied to table 'tiny__"):
        search.text("a dress", where="season = 'Summer'")


def test_path_bytes_and_pil_image_queries_agree(search, catalog):
    photo = catalog["photos"]["cap-04"]
    by_path = search.image(catalog["image_dir"] / "cap-04.jpg")
    by_text_path = search.image(str(catalog["image_dir"] / "cap-04.jpg"))
    by_bytes = search.image(photo)
    by_pil = search.image(Image.open(io.BytesIO(photo)))
    for other in (by_text_path, by_bytes, by_pil):
        assert other[ITEM_ID].to_list() == by_path[ITEM_ID].to_list()
        assert other[SCORE].to_list() == pytest.approx(by_path[SCORE].to_list(), abs=1e-5)


def test_a_missing_image_file_is_named(search, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.jpg"):
        search.image(tmp_path / "nothing.jpg")


def test_a_model_without_tables_gets_a_clear_error(catalog):
    other = ModelSpec("other", str(TINY_CONFIG), pretrained=catalog["spec"].pretrained, precision="fp32")
    with CatalogSearch(catalog["db_uri"], registry={MODEL: catalog["spec"], "other": other}) as search:
        with pytest.raises(ModelTablesMissingError, match=r"other__image and other__text.*materializ"):
            search.text("red dress", model="other")
        with pytest.raises(ModelTablesMissingError, match=r"looked for other__image\. .*materializ"):
            search.image(catalog["photos"]["cap-04"], model="other", fusion="image")


def test_the_default_model_is_the_first_one_with_tables(catalog):
    other = ModelSpec("other", str(TINY_CONFIG), pretrained=catalog["spec"].pretrained, precision="fp32")
    with CatalogSearch(catalog["db_uri"], registry={"other": other, MODEL: catalog["spec"]}) as search:
        assert search.text(ITEMS[0][1], fusion="text")[ITEM_ID][0] == ITEMS[0][0]


def test_unknown_models_and_strategies_are_named(catalog, search):
    with pytest.raises(ValueError, match="model 'nope' is not in the registry"):
        search.text("red dress", model="nope")
    with pytest.raises(ValueError, match="unknown fusion strategy 'best'"):
        CatalogSearch(catalog["db_uri"], registry={MODEL: catalog["spec"]}, fusion="best")
    with pytest.raises(ValueError, match="non-empty string"):
        search.text("   ")


def test_tables_written_after_the_first_query_are_found(tmp_path, catalog):
    db_uri = str(tmp_path / "lancedb")
    with CatalogSearch(db_uri, registry={MODEL: catalog["spec"]}, default_model=MODEL) as search:
        with pytest.raises(ModelTablesMissingError):
            search.text("red dress")
        clip = catalog["clip"]
        vectors = encode_texts(clip, [item[1] for item in ITEMS])
        rows = embedding_table_rows(catalog["spec"], clip, ITEMS, vectors, catalog["image_dir"])
        upsert_rows(connect(db_uri), table_name(MODEL, "text"), rows)
        hits = search.text(ITEMS[1][1])
        assert hits[ITEM_ID][0] == ITEMS[1][0]
        assert set(hits[MATCHED]) <= {"text", "text+keyword"}  # only the text table exists


def test_search_through_an_ann_index_finds_the_same_products(tmp_path, catalog):
    db_uri = str(tmp_path / "lancedb")
    shutil.copytree(catalog["db_uri"], db_uri)
    db = connect(db_uri)
    # pad the image table with unrelated products so an IVF index has something to partition
    clip = catalog["clip"]
    filler = np.random.default_rng(5).normal(size=(400, clip.embed_dim)).astype(np.float32)
    filler /= np.linalg.norm(filler, axis=1, keepdims=True)
    filler_items = [(f"filler-{i:03d}", f"filler product {i}", "Unisex", "Beige", None) for i in range(400)]
    upsert_rows(db, "tiny__image", embedding_table_rows(catalog["spec"], clip, filler_items, filler, catalog["image_dir"]))
    table = db.open_table("tiny__image")
    assert ensure_indexes(table, min_rows_for_ann=100)["vector_index_action"] == "created"
    assert ann_search_params(table) is not None

    photos = catalog["photos"]
    query = encode_images(clip, [photos["cap-04"]])[0]
    exact = (
        table.search(query, vector_column_name="vector").distance_type("cosine").bypass_vector_index()
        .limit(5).select([ITEM_ID, "_distance"]).to_arrow()
    )
    with CatalogSearch(db_uri, registry={MODEL: catalog["spec"]}) as search:
        assert search.image(photos["cap-04"], fusion="image", k=5)[ITEM_ID].to_list() == exact[ITEM_ID].to_pylist()
        for item_id in ("dress-01", "shirt-02", "heels-03"):
            assert search.image(photos[item_id], fusion="image", k=5)[ITEM_ID][0] == item_id
        women = search.image(photos["dress-01"], fusion="image", k=10, where="gender = 'Women'")
        assert set(women[ITEM_ID]) == {item[0] for item in ITEMS if item[2] == "Women"}


def test_search_works_the_same_on_s3(s3_endpoint, catalog):
    s3 = S3Settings(s3_endpoint["endpoint_url"], s3_endpoint["region"], s3_endpoint["key"], s3_endpoint["secret"])
    client = boto3.client(
        "s3", endpoint_url=s3.endpoint_url, region_name=s3.region, aws_access_key_id=s3.access_key_id,
        aws_secret_access_key=s3.secret_access_key,
    )
    client.create_bucket(Bucket="search")
    client.put_object(Bucket="search", Key="queries/cap.jpg", Body=catalog["photos"]["cap-04"])
    local = connect(catalog["db_uri"])
    remote = connect("s3://search/lancedb", s3.lancedb_options())
    for modality in ("image", "text"):
        name = table_name(MODEL, modality)
        upsert_rows(remote, name, local.open_table(name).to_arrow())

    with CatalogSearch("s3://search/lancedb", s3=s3, registry={MODEL: catalog["spec"]}) as search:
        assert search.text(ITEMS[4][1], fusion="text")[ITEM_ID][0] == ITEMS[4][0]
        hits = search.image("s3://search/queries/cap.jpg", where="gender = 'Men'", fusion="raw")
        assert hits[ITEM_ID][0] == "cap-04"
        assert set(hits["gender"]) == {"Men"}


def _publish_by_hand(models: Path, name: str, seed: int, source) -> str:
    """A published version of a tiny random model (models/<name>/versions/<version>/), as the domain_clip asset writes it."""
    checkpoint = write_random_checkpoint(TINY_CONFIG, source / f"{name}-{seed}.pt", seed=seed)
    version = checkpoint_fingerprint(checkpoint)
    folder = models / name / "versions" / version
    folder.mkdir(parents=True)
    shutil.copyfile(checkpoint, folder / CHECKPOINT_FILE)
    shutil.copyfile(TINY_CONFIG, folder / ARCHITECTURE_FILE)
    return version


def _make_current(models: Path, name: str, version: str) -> None:
    current = models / name / "current"
    current.mkdir(parents=True, exist_ok=True)
    for filename in (ARCHITECTURE_FILE, CHECKPOINT_FILE):  # copyfile: a new mtime, as a real publish gives
        shutil.copyfile(models / name / "versions" / version / filename, current / filename)


def test_a_search_encodes_with_the_version_its_tables_hold_through_a_retrain(tmp_path, catalog):
    models, name = tmp_path / "models", "retrained"
    first = _publish_by_hand(models, name, 0, tmp_path)
    second = _publish_by_hand(models, name, 1, tmp_path)
    _make_current(models, name, first)
    current = models / name / "current"
    spec = ModelSpec(name, str(current / ARCHITECTURE_FILE), str(current / CHECKPOINT_FILE), precision="fp32")
    db_uri = str(tmp_path / "lancedb")
    db = connect(db_uri)

    def embed(modality: str, items, version_spec_: ModelSpec) -> None:
        clip = load_clip(version_spec_)
        vectors = (
            encode_texts(clip, [item[1] for item in items]) if modality == "text"
            else encode_images(clip, [catalog["photos"][item[0]] for item in items])
        )
        upsert_rows(db, table_name(name, modality), embedding_table_rows(version_spec_, clip, items, vectors, catalog["image_dir"]))
        time.sleep(READ_CONSISTENCY.total_seconds() + 0.5)  # until the search's table handles see the commit

    for modality in ("image", "text"):
        embed(modality, ITEMS, spec)
    with CatalogSearch(db_uri, registry={name: spec}) as search:
        assert search.text(ITEMS[0][1], fusion="text")[SCORE][0] == pytest.approx(1.0, abs=1e-4)

        # retrained: the registry now serves the second version, the tables still hold the first
        _make_current(models, name, second)
        assert load_clip(spec).version == second
        hits = search.text(ITEMS[0][1], fusion="text")
        assert hits[ITEM_ID][0] == ITEMS[0][0]
        assert hits[SCORE][0] == pytest.approx(1.0, abs=1e-4), "the query was encoded by the first version"
        assert search.encode(name, texts=["a dress"]).version == first

        # re-embedding under way: some rows of the second version -> a clear error, never a mixed answer
        second_spec = ModelSpec(name, spec.architecture, str(models / name / "versions" / second / CHECKPOINT_FILE), precision="fp32")
        embed("text", ITEMS[:3], second_spec)
        with pytest.raises(ReembeddingInProgressError, match=f"re-embedding to version {second} in progress"):
            search.text(ITEMS[0][1])
        with pytest.raises(ReembeddingInProgressError):  # an already encoded query neither
            search.vector(np.ones(load_clip(spec).embed_dim, dtype=np.float32))
        # a search reading only the image table (all first version) still answers, with the first version
        by_photo = search.image(catalog["photos"]["cap-04"], fusion="image")
        assert by_photo[ITEM_ID][0] == "cap-04" and by_photo[SCORE][0] == pytest.approx(1.0, abs=1e-4)

        # re-embedding done: every row of both tables is of the second version, and so is the query
        embed("text", ITEMS, second_spec)
        embed("image", ITEMS, second_spec)
        for modality in ("image", "text"):
            assert set(db.open_table(table_name(name, modality)).to_arrow()["model_version"].to_pylist()) == {second}
        assert search.text(ITEMS[5][1], fusion="text")[SCORE][0] == pytest.approx(1.0, abs=1e-4)
        assert search.encode(name, texts=["a dress"]).version == second


def test_tables_of_a_version_whose_checkpoint_is_gone_get_a_clear_error(tmp_path, catalog):
    models, name = tmp_path / "models", "orphaned"
    first = _publish_by_hand(models, name, 0, tmp_path)
    second = _publish_by_hand(models, name, 1, tmp_path)
    _make_current(models, name, first)
    current = models / name / "current"
    spec = ModelSpec(name, str(current / ARCHITECTURE_FILE), str(current / CHECKPOINT_FILE), precision="fp32")
    clip = load_clip(spec)
    db_uri = str(tmp_path / "lancedb")
    vectors = encode_texts(clip, [item[1] for item in ITEMS])
    upsert_rows(connect(db_uri), table_name(name, "text"), embedding_table_rows(spec, clip, ITEMS, vectors, catalog["image_dir"]))
    _make_current(models, name, second)
    shutil.rmtree(models / name / "versions" / first)
    with CatalogSearch(db_uri, registry={name: spec}) as search:
        with pytest.raises(ReembeddingInProgressError, match=f"hold version {first}.*re-materialize the embeddings"):
            search.text("a dress")
