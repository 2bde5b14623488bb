"""A new drop on top of N embedded items versus rebuilding everything (the incremental-drop issue).

Both sides run the real steps on generated JPEG drops: read captions, build the image manifest,
clean, apply every drop to the catalog, and sync both embedding tables (image and text) of the
small packaged architecture (random weights). The incremental side starts from a database that
already holds the first N items and processes one new drop of N/10; the rebuild side processes
all N + N/10 items into an empty database. Target: incremental / rebuild <= 0.15, as the ratio of
the medians of interleaved rounds.
"""

from __future__ import annotations

import random
import shutil
import time
from functools import partial
from pathlib import Path

import numpy as np

from fashion_search_pipeline.catalog.captions import read_captions
from fashion_search_pipeline.catalog.cleaning import accepted_items, clean_captions
from fashion_search_pipeline.catalog.drops import DropLocation
from fashion_search_pipeline.catalog.images import build_manifest
from fashion_search_pipeline.catalog.state import DropChanges, apply_drops
from fashion_search_pipeline.demo_catalog import ARTICLES, COLOURS, DemoItem, write_drop
from fashion_search_pipeline.embedding_sync import sync_embeddings
from fashion_search_pipeline.models.checkpoints import SMALL_CONFIG, write_random_checkpoint
from fashion_search_pipeline.models.loading import LoadedClip, load_clip
from fashion_search_pipeline.models.registry import ModelSpec
from fashion_search_pipeline.store.tables import connect

TARGET_RATIO = 0.15


def _items(start: int, count: int) -> list[DemoItem]:
    rng = random.Random(start)
    items = []
    for number in range(start, start + count):
        article, colour = rng.choice(ARTICLES), rng.choice(list(COLOURS))
        description = f"Nova Unisex {colour} {article} {number}"
        items.append(DemoItem(f"item-{number:06d}", description, "Unisex", article, colour))
    return items


def _cleaned(landing: Path, drop_id: str) -> DropChanges:
    drop = DropLocation(str(landing), drop_id)
    cleaned = clean_captions(read_captions(drop), build_manifest(drop))
    return DropChanges(drop_id, accepted_items(cleaned), ())


def _process(landing: Path, drop_ids: list[str], done: dict[str, DropChanges], db_path: Path, clip: LoadedClip) -> int:
    """Clean the drops not cleaned yet, rebuild the catalog, sync both tables of the database at db_path;
    returns items embedded."""
    db = connect(str(db_path))
    for drop_id in drop_ids:
        if drop_id not in done:
            done[drop_id] = _cleaned(landing, drop_id)
    catalog = apply_drops(done[d] for d in drop_ids)
    return sum(
        sync_embeddings(catalog, db, clip, modality, read_image=_read_file).embedded for modality in ("image", "text")
    )


def _read_file(uri: str) -> bytes:
    return Path(uri).read_bytes()


def run(work_dir: Path, n: int, log, rounds: int = 5) -> dict:
    """Seconds for a new drop of n/10 items after n, and for a rebuild of all n + n/10: medians of rounds.

    The database holding the first n items is built once and copied for each round (the copy is not
    timed); rounds alternate which side runs first, and the ratio is of the two medians, so one round
    slowed by a neighbour cannot decide it.
    """
    landing = work_dir / "incremental-landing"
    write_drop(landing / "drops" / "d1", _items(0, n), seed=1)
    write_drop(landing / "drops" / "d2", _items(n, n // 10), seed=2)
    checkpoint = write_random_checkpoint(SMALL_CONFIG, work_dir / "fsp-small-random.pt", seed=0)
    clip = load_clip(ModelSpec("bench-small", str(SMALL_CONFIG), str(checkpoint), batch_size=64))

    cleaned: dict[str, DropChanges] = {}
    seeded = work_dir / "incremental-seed-db"
    _process(landing, ["d1"], cleaned, seeded, clip)
    seconds: dict[str, list[float]] = {"incremental": [], "rebuild": []}
    embedded: dict[str, int] = {}
    for number in range(rounds):
        incremental_db, rebuild_db = work_dir / f"incremental-db-{number}", work_dir / f"rebuild-db-{number}"
        shutil.copytree(seeded, incremental_db)
        sides = {
            "incremental": partial(_process, landing, ["d1", "d2"], {"d1": cleaned["d1"]}, incremental_db, clip),
            "rebuild": partial(_process, landing, ["d1", "d2"], {}, rebuild_db, clip),
        }
        for name in (list(sides) if number % 2 == 0 else list(sides)[::-1]):
            started = time.perf_counter()
            embedded[name] = sides[name]()
            seconds[name].append(time.perf_counter() - started)
        shutil.rmtree(incremental_db)
        shutil.rmtree(rebuild_db)
        log(f"incremental: round {number + 1}/{rounds}: new drop of {n // 10} on {n}: "
            f"{seconds['incremental'][-1]:.2f} s ({embedded['incremental']} vectors); full rebuild of "
            f"{n + n // 10}: {seconds['rebuild'][-1]:.2f} s ({embedded['rebuild']} vectors)")
    incremental, rebuild = (float(np.median(seconds[name])) for name in ("incremental", "rebuild"))
    per_round = [a / b for a, b in zip(seconds["incremental"], seconds["rebuild"])]
    return {
        "items_before": n,
        "items_new": n // 10,
        "rounds": rounds,
        "incremental_seconds": round(incremental, 2),
        "rebuild_seconds": round(rebuild, 2),
        "ratio": round(incremental / rebuild, 3),
        "ratio_range_over_rounds": [round(min(per_round), 3), round(max(per_round), 3)],
        "target_ratio": TARGET_RATIO,
        "vectors_embedded_incremental": embedded["incremental"],
        "vectors_embedded_rebuild": embedded["rebuild"],
    }
