"""Peak memory of the embedding step at two catalog sizes, each in a fresh child process.

The child loads the tiny test model, builds the catalog frame of the first N generated JPEGs,
and runs the real image embedding step (files -> encoder -> LanceDB). Its peak RSS minus its RSS
before the step is what the step itself needed; bounded streaming keeps that flat as N grows.

Peak RSS is the child's VmHWM (Linux): getrusage's ru_maxrss survives exec, so a child forked
from this multi-GiB benchmark process would report the parent's size instead of its own.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

from fashion_search_pipeline import columns as C
from fashion_search_pipeline.demo_catalog import ARTICLES, COLOURS, render
from fashion_search_pipeline.embedding_sync import sync_embeddings
from fashion_search_pipeline.models.checkpoints import (
    TINY_CONFIG,
    write_random_checkpoint,
)
from fashion_search_pipeline.models.loading import load_clip
from fashion_search_pipeline.models.registry import ModelSpec
from fashion_search_pipeline.store.tables import connect

JPEG_QUALITY = 85
REPO = Path(__file__).resolve().parents[1]


def run(work_dir: Path, sizes: tuple[int, int], log) -> dict:
    """Peak RSS of the image embedding step for each catalog size (MiB, one child process each)."""
    images = work_dir / "memory-images"
    started = time.perf_counter()
    write_generated_jpegs(images, max(sizes))
    log(f"memory: {max(sizes):,} generated JPEGs written in {time.perf_counter() - started:.0f} s")
    checkpoint = write_random_checkpoint(TINY_CONFIG, work_dir / "fsp-tiny.safetensors")
    runs = []
    for size in sizes:
        db = work_dir / f"memory-db-{size}"
        command = [sys.executable, "-m", "benchmarks.memory", str(images), str(db), str(checkpoint), str(size)]
        child = subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO)
        result = json.loads(child.stdout.strip().splitlines()[-1])
        runs.append(result)
        log(
            f"memory: {size:,} items: peak RSS {result['peak_rss_mib']:.0f} MiB "
            f"(step {result['step_rss_mib']:.0f} MiB), {result['items_per_second']:.0f} items/s"
        )
    small, large = runs
    return {
        "runs": runs,
        "step_growth_ratio": large["step_rss_mib"] / max(small["step_rss_mib"], 1.0),
        "peak_growth_ratio": large["peak_rss_mib"] / small["peak_rss_mib"],
    }


def write_generated_jpegs(folder: Path, count: int, *, seed: int = 11) -> None:
    """`count` small garment JPEGs named 000000.jpg, 000001.jpg, ... (kept when already there)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    colours = list(COLOURS)
    for index in range(count):
        path = folder / f"{index:06d}.jpg"
        article, colour = ARTICLES[index % len(ARTICLES)], colours[(index // len(ARTICLES)) % len(colours)]
        if not path.exists():
            render(article, colour, rng).save(path, format="JPEG", quality=JPEG_QUALITY)


def generated_catalog(images: Path, count: int) -> pl.DataFrame:
    """A catalog frame over the first `count` generated JPEGs (what catalog_items would hold)."""
    colours = list(COLOURS)
    rows = []
    for index in range(count):
        article, colour = ARTICLES[index % len(ARTICLES)], colours[(index // len(ARTICLES)) % len(colours)]
        item_id = f"item-{index:06d}"
        rows.append({
            C.ITEM_ID: item_id,
            C.DROP_ID: "generated",
            C.IMAGE_URI: str(images / f"{index:06d}.jpg"),
            C.DESCRIPTION: f"{colour} {article}",
            C.CONTENT_HASH: hashlib.sha256(item_id.encode()).hexdigest(),
            "article_type": article,
            "colour": colour,
        })
    return pl.DataFrame(rows)


def _status_mib(field: str) -> float:
    """A memory figure of this process from /proc/self/status (Linux), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field} line")


def _child(images: Path, db_path: Path, checkpoint: Path, count: int) -> dict:
    clip = load_clip(ModelSpec("fsp-tiny", str(TINY_CONFIG), str(checkpoint), device="cpu"))
    catalog = generated_catalog(images, count)
    db = connect(str(db_path))
    before = _status_mib("VmRSS")
    report = sync_embeddings(catalog, db, clip, "image", read_image=lambda uri: Path(uri).read_bytes())
    peak = _status_mib("VmHWM")
    return {
        "items": count,
        "embedded": report.embedded,
        "rows_after": report.rows_after,
        "seconds": report.seconds,
        "items_per_second": report.items_per_second,
        "rss_before_step_mib": before,
        "peak_rss_mib": peak,
        "step_rss_mib": peak - before,
    }


def main(argv: list[str] | None = None) -> None:
    """Child entry point: run the embedding step once and print its memory figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("images", type=Path)
    parser.add_argument("db", type=Path)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("count", type=int)
    args = parser.parse_args(argv)
    print(json.dumps(_child(args.images, args.db, args.checkpoint, args.count)))


if __name__ == "__main__":
    main()
