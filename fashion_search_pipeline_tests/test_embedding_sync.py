"""The embedding step on real files, a real tiny open_clip model and real LanceDB tables."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from fashion_search_pipeline import columns as C
from fashion_search_pipeline import embedding_sync
from fashion_search_pipeline.embedding_sync import sync_embeddings
from fashion_search_pipeline.models.checkpoints import (
    TINY_CONFIG,
    write_random_checkpoint,
)
from fashion_search_pipeline.models.encoders import encode_images, encode_texts
from fashion_search_pipeline.models.loading import load_clip
from fashion_search_pipeline.models.registry import ModelSpec
from fashion_search_pipeline.store.tables import connect, open_existing_table
from fashion_search_pipeline_tests.image_catalogs import catalog_of, read_bytes, write_random_jpegs


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    checkpoint = write_random_checkpoint(TINY_CONFIG, tmp_path_factory.mktemp("model") / "tiny.pt")
    return load_clip(ModelSpec("tiny", str(TINY_CONFIG), str(checkpoint), device="cpu", precision="fp32", batch_size=4))


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("images")
    paths = write_random_jpegs(folder, 40, (40, 48))
    return paths




def stored_vectors(db, name: str) -> dict[str, np.ndarray]:
    rows = open_existing_table(db, name).search().select([C.ITEM_ID, C.VECTOR]).limit(None).to_arrow().to_pylist()
    return {row[C.ITEM_ID]: np.asarray(row[C.VECTOR]) for row in rows}


def test_image_sync_stores_every_item_with_its_own_vector(tmp_path, clip, images):
    catalog = catalog_of(images[:10])
    db = connect(str(tmp_path / "db"))
    report = sync_embeddings(catalog, db, clip, "image", read_image=read_bytes)
    assert (report.embedded, report.rows_after, report.skipped) == (10, 10, 0)
    expected = encode_images(clip, [path.read_bytes() for path in images[:10]])
    stored = stored_vectors(db, "tiny__image")
    np.testing.assert_allclose(np.stack([stored[i] for i in catalog[C.ITEM_ID]]), expected, atol=1e-5)
    again = sync_embeddings(catalog, db, clip, "image", read_image=read_bytes)
    assert (again.embedded, again.skipped, again.rows_after) == (0, 10, 10)


def test_text_sync_in_chunks_matches_one_encode(tmp_path, clip, images, monkeypatch):
    monkeypatch.setattr(embedding_sync, "WRITE_ROWS", 16)
    catalog = catalog_of(images)
    db = connect(str(tmp_path / "db"))
    report = sync_embeddings(catalog, db, clip, "text", read_image=read_bytes)
    assert report.embedded == 40
    stored = stored_vectors(db, "tiny__text")
    expected = encode_texts(clip, catalog[C.DESCRIPTION].to_list())
    np.testing.assert_allclose(np.stack([stored[i] for i in catalog[C.ITEM_ID]]), expected, atol=1e-5)


def test_fast_encoders_commit_in_large_writes(tmp_path, clip, images, monkeypatch):
    monkeypatch.setattr(embedding_sync, "WRITE_ROWS", 16)
    monkeypatch.setattr(embedding_sync, "WRITE_INTERVAL_S", 3600.0)
    db = connect(str(tmp_path / "db"))
    messages = []
    sync_embeddings(catalog_of(images[:36]), db, clip, "image", read_image=read_bytes, log=messages.append)
    # Batches of 4 gathered into commits of 16, 16 and the last 4: the table's first three versions.
    assert open_existing_table(db, "tiny__image").version == 3
    assert [m.split(" embedded")[0] for m in messages[1:]] == ["tiny__image: 16/36", "tiny__image: 32/36",
                                                                "tiny__image: 36/36"]


def test_slow_encoders_commit_every_interval(tmp_path, clip, images, monkeypatch):
    monkeypatch.setattr(embedding_sync, "WRITE_INTERVAL_S", 0.0)
    db = connect(str(tmp_path / "db"))
    report = sync_embeddings(catalog_of(images[:12]), db, clip, "image", read_image=read_bytes)
    assert report.embedded == 12
    assert open_existing_table(db, "tiny__image").version == 3  # one commit per batch of 4


def test_a_failed_read_keeps_committed_batches_and_the_next_sync_resumes(tmp_path, clip, images, monkeypatch):
    monkeypatch.setattr(embedding_sync, "WRITE_INTERVAL_S", 0.0)
    catalog = catalog_of(images[:20])
    missing = str(images[13])

    def flaky_read(uri: str) -> bytes:
        if uri == missing:
            raise FileNotFoundError(uri)
        return read_bytes(uri)

    db = connect(str(tmp_path / "db"))
    with pytest.raises(FileNotFoundError, match="013.jpg"):
        sync_embeddings(catalog, db, clip, "image", read_image=flaky_read)
    kept = open_existing_table(db, "tiny__image").count_rows()
    assert 0 < kept <= 12  # whole batches before the one holding the missing file
    resumed = sync_embeddings(catalog, db, clip, "image", read_image=read_bytes)
    assert (resumed.skipped, resumed.embedded, resumed.rows_after) == (kept, 20 - kept, 20)


def test_reads_run_ahead_of_the_encoder_by_a_bounded_depth(images):
    started = []
    lock = threading.Lock()

    def counting_read(uri: str) -> bytes:
        with lock:
            started.append(uri)
        return read_bytes(uri)

    uris = [str(path) for path in images[:20]]
    reads = embedding_sync._read_ahead(counting_read, uris, depth=6)
    first = next(reads)
    assert first == (0, images[0].read_bytes())
    assert len(started) <= 6
    rest = list(reads)
    assert [position for position, _ in rest] == list(range(1, 20))
    assert sorted(started) == sorted(uris)


def test_duplicates_left_by_an_unlocked_writer_are_repaired_by_the_next_sync(tmp_path, clip, images):
    db = connect(str(tmp_path / "db"))
    catalog = catalog_of(images[:6])
    sync_embeddings(catalog, db, clip, "text", read_image=read_bytes)
    table = open_existing_table(db, "tiny__text")
    table.add(table.to_arrow().slice(0, 3))  # what two writers racing without the lock left behind
    assert table.count_rows() == 9

    report = sync_embeddings(catalog, db, clip, "text", read_image=read_bytes)

    ids = open_existing_table(db, "tiny__text").to_arrow().column(C.ITEM_ID).to_pylist()
    assert sorted(ids) == sorted(catalog[C.ITEM_ID].to_list())
    assert report.rows_after == 6 and report.embedded == 0
