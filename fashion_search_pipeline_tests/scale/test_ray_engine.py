"""The encode stage on a real local Ray cluster (Ray Data), against the local engine, on real files."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fashion_search_pipeline import columns as C
from fashion_search_pipeline import embedding_sync
from fashion_search_pipeline.embedding_sync import sync_embeddings
from fashion_search_pipeline.models.checkpoints import TINY_CONFIG
from fashion_search_pipeline.models.loading import load_clip
from fashion_search_pipeline.models.registry import ModelSpec
from fashion_search_pipeline.scale.ray_engine import RayEngine, RaySettings
from fashion_search_pipeline.store.tables import connect, open_existing_table
from fashion_search_pipeline_tests.image_catalogs import catalog_of, read_bytes, write_random_jpegs
from fashion_search_pipeline_tests.scale.conftest import encoder_actor_pids

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def clip(tiny_checkpoint):
    spec = ModelSpec("tiny", str(TINY_CONFIG), str(tiny_checkpoint), device="cpu", precision="fp32", batch_size=4)
    return load_clip(spec)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("images")
    paths = write_random_jpegs(folder, 120, (60, 48))
    # One transparent PNG: both engines must put it on white the same way.
    Image.new("RGBA", (40, 40), (200, 10, 10, 0)).save(folder / "cutout.png")
    return paths + [folder / "cutout.png"]




def stored(db, name: str) -> dict[str, np.ndarray]:
    rows = open_existing_table(db, name).search().select([C.ITEM_ID, C.VECTOR]).limit(None).to_arrow().to_pylist()
    assert len(rows) == len({row[C.ITEM_ID] for row in rows}), "an item is stored twice"
    return {row[C.ITEM_ID]: np.asarray(row[C.VECTOR]) for row in rows}


def min_cosine(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return min(float(a[key] @ b[key] / np.linalg.norm(a[key]) / np.linalg.norm(b[key])) for key in a)


@pytest.mark.parametrize("modality", ["image", "text"])
def test_ray_engine_stores_the_same_items_and_vectors_as_local(ray_cluster, tmp_path, clip, images, modality):
    catalog = catalog_of(images)
    local_db, ray_db = connect(str(tmp_path / "local")), connect(str(tmp_path / "ray"))
    local = sync_embeddings(catalog, local_db, clip, modality, read_image=read_bytes)
    on_ray = sync_embeddings(catalog, ray_db, clip, modality, read_image=read_bytes, engine=RayEngine())

    assert (on_ray.embedded, on_ray.rows_after) == (local.embedded, local.rows_after) == (len(images), len(images))
    name = f"tiny__{modality}"
    local_vectors, ray_vectors = stored(local_db, name), stored(ray_db, name)
    assert set(ray_vectors) == set(local_vectors)
    assert min_cosine(local_vectors, ray_vectors) >= 0.9999
    again = sync_embeddings(catalog, ray_db, clip, modality, read_image=read_bytes, engine=RayEngine())
    assert (again.embedded, again.skipped) == (0, len(images))


class KillActorOnce:
    """The real RayEngine; after its first batch arrives, the model actor's process is SIGKILLed."""

    def __init__(self, engine: RayEngine):
        self.engine = engine
        self.killed: int | None = None
        self.seen_after_kill: set[int] = set()

    def encode(self, items, clip, modality, batch_size):
        for rows, vectors in self.engine.encode(items, clip, modality, batch_size):
            if self.killed is None:
                self.killed = encoder_actor_pids()[0]
                os.kill(self.killed, signal.SIGKILL)
            else:
                self.seen_after_kill.update(encoder_actor_pids())
            yield rows, vectors


def test_a_killed_model_actor_is_restarted_and_every_row_lands_once(ray_cluster, tmp_path, clip, images, monkeypatch):
    monkeypatch.setattr(embedding_sync, "WRITE_ROWS", 8)
    catalog = catalog_of(images)
    db = connect(str(tmp_path / "db"))
    engine = KillActorOnce(RayEngine(RaySettings(batch_size=2)))

    report = sync_embeddings(catalog, db, clip, "image", read_image=read_bytes, engine=engine)

    assert engine.killed is not None
    assert engine.seen_after_kill - {engine.killed}, "no restarted actor encoded the remaining batches"
    assert (report.embedded, report.rows_after) == (len(images), len(images))
    local_db = connect(str(tmp_path / "local"))
    sync_embeddings(catalog, local_db, clip, "image", read_image=read_bytes)
    assert min_cosine(stored(local_db, "tiny__image"), stored(db, "tiny__image")) >= 0.9999


def test_an_unreadable_image_fails_naming_the_item_and_a_rerun_completes(
    ray_cluster, tmp_path, clip, images, monkeypatch
):
    monkeypatch.setattr(embedding_sync, "WRITE_ROWS", 4)
    folder = tmp_path / "landing"
    folder.mkdir()
    copies = []
    for path in images[:24]:
        copy = folder / path.name
        copy.write_bytes(path.read_bytes())
        copies.append(copy)
    catalog = catalog_of(copies)
    vanished = copies[17]
    saved = vanished.read_bytes()
    vanished.unlink()  # storage trouble after cleaning accepted the image
    db = connect(str(tmp_path / "db"))

    with pytest.raises(Exception, match="item-017") as failure:
        sync_embeddings(catalog, db, clip, "image", read_image=read_bytes, engine=RayEngine(RaySettings(batch_size=2)))
    assert str(vanished) in str(failure.value)

    table = open_existing_table(db, "tiny__image")
    committed = stored(db, "tiny__image") if table is not None else {}
    assert "item-017" not in committed
    assert set(committed) <= set(catalog[C.ITEM_ID])
    vanished.write_bytes(saved)
    rerun = sync_embeddings(catalog, db, clip, "image", read_image=read_bytes, engine=RayEngine())
    assert (rerun.embedded, rerun.rows_after) == (24 - len(committed), 24)
    local_db = connect(str(tmp_path / "local"))
    sync_embeddings(catalog, local_db, clip, "image", read_image=read_bytes)
    assert min_cosine(stored(local_db, "tiny__image"), stored(db, "tiny__image")) >= 0.9999
