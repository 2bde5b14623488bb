"""Ray engine overhead: the embedding step with engine `ray` vs `local`, same real images, same model.

Ray runs only inside a private network namespace with loopback alone (outside one it dials the
machine's external address), so `run` re-runs this module in a child under `unshare -n` and reads
its JSON back. Inside, a local Ray cluster starts with one logical CPU more than the machine has
cores: the model actor gets every core (as the local step's torch does) and the decode tasks one
more slot, overlapping the model as the local step's decode threads do. Each engine embeds the
same items into its own fresh table; the Ray figure includes the actor's start and model load
(paid once per step), not the cluster's start (a cluster outlives steps).

    python -m benchmarks.ray_engine --catalog ../shared/data/fashion-catalog --items 1099   # inside unshare -n
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.report import Row

REPO = Path(__file__).resolve().parents[1]
ARCHITECTURE = "ViT-B-32"
BATCH_SIZE = 32
FULL_ITEMS = 1_099  # the whole shared catalog
QUICK_ITEMS = 96
TARGET_RATIO = 0.8


def run(catalog_folder: Path, work: Path, *, quick: bool, log: Callable[[str], None]) -> dict:
    """The measurement, run in a loopback-only network namespace; {"skipped": why} where none can be made."""
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        return {"skipped": "no private network namespace (needs root and unshare -n); Ray must not run outside one"}
    out = work / "ray-engine.json"
    items = QUICK_ITEMS if quick else FULL_ITEMS
    inner = (
        f"ip link set lo up && exec {sys.executable} -m benchmarks.ray_engine --catalog {catalog_folder} "
        f"--items {items} --work {work / 'ray-engine'} --out {out}"
    )
    log(f"ray engine: {items} images, local vs ray, under unshare -n")
    subprocess.run(["unshare", "-n", "sh", "-c", inner], check=True, cwd=REPO)
    return json.loads(out.read_text())


def rows(results: dict) -> list[Row]:
    """The table row: Ray throughput as a share of local throughput."""
    ray = results.get("ray_engine", {})
    if "skipped" in ray:
        return [Row("embedding engine: ray vs local", "skipped", ray["skipped"], None)]
    return [
        Row(f"embedding engine: ray vs local, {ray['items']:,} catalog images (ViT-B-32, incl. actor start)",
            f"{ray['ray_images_per_second']:.2f} img/s",
            f"{ray['local_images_per_second']:.2f} img/s local ({ray['ray_cpus']} Ray CPUs on {ray['cores']} cores)",
            ray["ratio"], f">= {TARGET_RATIO}", ray["ratio"] >= TARGET_RATIO),
        Row("embedding engine: min cosine, ray vs local vectors", f"{ray['min_cosine']:.6f}", "1.0",
            ray["min_cosine"], ">= 0.9999", ray["min_cosine"] >= 0.9999),
    ]


def measure(catalog_folder: Path, items: int, work: Path) -> dict:
    """Embed `items` catalog images locally and on a fresh local Ray cluster; images/s of each."""
    import numpy as np
    import ray

    from benchmarks.run import _catalog, _log, _read_bytes
    from fashion_search_pipeline.embedding_sync import sync_embeddings
    from fashion_search_pipeline.models.checkpoints import write_random_checkpoint
    from fashion_search_pipeline.models.loading import load_clip
    from fashion_search_pipeline.models.registry import ModelSpec
    from fashion_search_pipeline.scale.ray_engine import RayEngine, RaySettings
    from fashion_search_pipeline.store.tables import connect

    work.mkdir(parents=True, exist_ok=True)
    catalog = _catalog(catalog_folder, work, items)[0].head(items)
    checkpoint = write_random_checkpoint(ARCHITECTURE, work / "vit-b-32-random.safetensors")
    clip = load_clip(ModelSpec("bench-vit-b-32", ARCHITECTURE, str(checkpoint), batch_size=BATCH_SIZE))
    cores = os.cpu_count() or 1
    ray.init(num_cpus=cores + 1, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    engine = RayEngine(RaySettings(actor_cpus=cores, decode_cpus=1))
    seconds = {}
    for name, chosen in (("local", None), ("ray", engine)):
        started = time.perf_counter()
        report = sync_embeddings(catalog, connect(str(work / name)), clip, "image", read_image=_read_bytes,
                                 engine=chosen)
        seconds[name] = time.perf_counter() - started
        _log(f"ray engine: {name} embedded {report.embedded} in {seconds[name]:.1f}s")
    ray.shutdown()
    tables = {name: connect(str(work / name)).open_table("bench-vit-b-32__image").to_arrow() for name in seconds}
    vectors = {
        name: dict(zip(table["item_id"].to_pylist(), np.stack(table["vector"].to_numpy(zero_copy_only=False))))
        for name, table in tables.items()
    }
    cosine = min(float(vectors["local"][key] @ vectors["ray"][key]) for key in vectors["local"])
    return {
        "items": catalog.height,
        "cores": cores,
        "ray_cpus": cores + 1,
        "local_images_per_second": catalog.height / seconds["local"],
        "ray_images_per_second": catalog.height / seconds["ray"],
        "ratio": seconds["local"] / seconds["ray"],
        "min_cosine": cosine,
    }


def main(argv: list[str] | None = None) -> int:
    """Inside the namespace: measure and write the JSON `run` reads."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ray_engine", description=__doc__.split("\n")[0])
    parser.add_argument("--catalog", type=Path, required=True)
    parser.add_argument("--items", type=int, default=FULL_ITEMS)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    results = measure(args.catalog, args.items, args.work)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
