"""Two real processes that merge-insert the same new item ids into one table at the same moment.

Used by the store tests, and run as a measurement (`python -m
fashion_search_pipeline_tests.store.concurrent_writers`: 12 trials without and with the lock,
local folder). Each writer process loops over the trials, meets the
other at a barrier before each one, and upserts ids 0..n-1 with its own vectors and content
hashes, so the table shows whose row won each id.
"""

from __future__ import annotations

import multiprocessing
import time

import numpy as np
import polars as pl
import pyarrow as pa

from fashion_search_pipeline.columns import CONTENT_HASH, ITEM_ID
from fashion_search_pipeline.store import tables

DIM = 4


def writer_rows(ids: list[str], writer: int) -> pa.Table:
    """Rows for `ids` that carry the writer's number in drop_id and content_hash."""
    schema = tables.embedding_schema(DIM, [])
    vectors = np.full((len(ids), DIM), float(writer + 1), dtype=np.float32)
    return pa.table(
        {
            ITEM_ID: ids,
            "drop_id": [f"writer-{writer}"] * len(ids),
            "image_uri": [f"file:///{item}.jpg" for item in ids],
            "description": [f"item {item}" for item in ids],
            CONTENT_HASH: [f"writer-{writer}-{item}" for item in ids],
            "model": ["m"] * len(ids),
            "model_version": ["v1"] * len(ids),
            "attributes": ["{}"] * len(ids),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM),
        },
        schema=schema,
    )


def _unlocked_upsert(db, name: str, rows: pa.Table) -> int:
    """A merge-insert without the table lock: what upsert_rows did before, for the measurement only."""
    prepared = tables._prepared_rows(name, rows)
    return tables.retry_commit_conflicts(lambda: tables._upsert_once(db, name, prepared))


def _write_trials(db_uri, options, names, ids, writer, barrier, results, locked=True) -> None:
    db = tables.connect(db_uri, options)
    rows = writer_rows(ids, writer)
    upsert = tables.upsert_rows if locked else _unlocked_upsert
    seconds = []
    for name in names:
        barrier.wait()
        started = time.perf_counter()
        upsert(db, name, rows)
        seconds.append(time.perf_counter() - started)
    results.put((writer, seconds))


def race(
    db_uri: str, options: dict | None, names: list[str], ids: list[str], timeout_s: float = 300, *, locked: bool = True
) -> list[float]:
    """Run two writer processes over the tables `names`; returns each trial's slower write in seconds."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    results = context.Queue()
    processes = [
        context.Process(target=_write_trials, args=(db_uri, options, names, ids, writer, barrier, results, locked))
        for writer in (0, 1)
    ]
    for process in processes:
        process.start()
    try:
        outcome = dict(results.get(timeout=timeout_s) for _ in processes)
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    assert all(process.exitcode == 0 for process in processes), [process.exitcode for process in processes]
    return [max(pair) for pair in zip(outcome[0], outcome[1])]


def table_outcome(db, name: str) -> dict:
    """Rows, distinct ids, and whether every row is one writer's whole row."""
    frame = pl.from_arrow(db.open_table(name).to_arrow())
    writer_of_hash = frame[CONTENT_HASH].str.extract(r"^writer-(\d)-", 1)
    writer_of_drop = frame["drop_id"].str.extract(r"^writer-(\d)$", 1)
    return {
        "rows": frame.height,
        "ids": frame[ITEM_ID].n_unique(),
        "whole_rows": bool((writer_of_hash == writer_of_drop).all()),
    }


def main() -> None:
    """Print trials with duplicates, rows and the median slower write, without and with the lock."""
    import tempfile

    ids = [f"item-{i:04d}" for i in range(500)]
    for locked in (False, True):
        uri = tempfile.mkdtemp(prefix="race-") + "/lancedb"
        db = tables.connect(uri)
        names = [f"race{trial}__image" for trial in range(12)]
        for name in names:
            tables.upsert_rows(db, name, writer_rows(["seed"], 0))
        seconds = sorted(race(uri, None, names, ids, locked=locked))
        outcomes = [table_outcome(db, name) for name in names]
        duplicated = sum(outcome["rows"] != outcome["ids"] for outcome in outcomes)
        print(
            f"{'with' if locked else 'without'} the lock: {duplicated} of {len(names)} trials duplicated ids; "
            f"rows per table {sorted({o['rows'] for o in outcomes})} for {len(ids) + 1} ids; "
            f"median slower write {seconds[len(seconds) // 2]:.3f}s"
        )


if __name__ == "__main__":
    main()
