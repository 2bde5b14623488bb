"""Training precision: domain-clip trained in fp32 and with bf16 autocast, same epochs, same data.

Each run trains the packaged small architecture from scratch on the catalog (fp32 master weights
either way) for the same number of epochs, then judges it on the same held-out items. The figures:
samples/s, wall seconds and held-out text->image MRR per precision. Equal epochs rather than equal
seconds keeps the MRR comparison independent of load from neighbours; when bf16 is faster at equal
or better MRR, it is also at least as good within fp32's time budget (it could train longer).

    python -m benchmarks.training_precision --epochs 30    # about 7 min on 2 cores (Zen 4)
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import polars as pl

from benchmarks.report import Row
from fashion_search_pipeline.domain_training import train_domain_model
from fashion_search_pipeline.models.training import TrainingConfig

PRECISIONS = ("fp32", "bf16")
MRR_TOLERANCE = 0.01  # "equal" held-out MRR: within this of fp32's (one seed, one split)


def run(catalog: pl.DataFrame, read_image: Callable[[str], bytes], work: Path, epochs: int,
        log: Callable[[str], None] = print) -> dict:
    """Train once per precision (fp32 first, then bf16 autocast) for `epochs` each; figures per precision."""
    figures = {}
    for precision in PRECISIONS:
        config = TrainingConfig(max_train_seconds=None, epochs=epochs, precision=precision)
        result = train_domain_model(catalog, read_image, config, models_root=work / f"models-{precision}",
                                    log=lambda message: None, force=True)
        training, held_out = result.card["training"], result.card["held_out"]
        figures[precision] = {
            "ran_as": training["precision"],
            "samples_per_second": training["samples_per_second"],
            "wall_seconds": training["wall_seconds"],
            "epochs_completed": training["epochs_completed"],
            "heldout_text_to_image_mrr": held_out["text_to_image_mrr"],
        }
        log(f"training precision {precision}: {figures[precision]}")
    return {"epochs": epochs, "runs": figures}


def rows(results: dict) -> list[Row]:
    """Bench rows: bf16 autocast vs fp32 training, speed and held-out MRR at equal epochs."""
    training = results.get("training_precision")
    if not training:
        return []
    fp32, bf16 = training["runs"]["fp32"], training["runs"]["bf16"]
    budget = f"{training['epochs']} epochs each"
    equal_or_better = bf16["heldout_text_to_image_mrr"] >= fp32["heldout_text_to_image_mrr"] - MRR_TOLERANCE
    return [
        Row("training: bf16 autocast vs fp32, samples/s (domain-clip, small arch)",
            f"{bf16['samples_per_second']:.1f}/s", f"{fp32['samples_per_second']:.1f}/s ({budget})",
            bf16["samples_per_second"] / fp32["samples_per_second"]),
        Row("training: held-out MRR at equal epochs, bf16 autocast vs fp32",
            f"{bf16['heldout_text_to_image_mrr']:.3f}", f"{fp32['heldout_text_to_image_mrr']:.3f}",
            bf16["heldout_text_to_image_mrr"] / max(fp32["heldout_text_to_image_mrr"], 1e-9),
            f">= fp32 - {MRR_TOLERANCE}", equal_or_better),
    ]


def main(argv: list[str] | None = None) -> int:
    """Standalone: train both precisions on the shared catalog and print the figures."""
    from benchmarks.run import SHARED_CATALOG, _catalog_of, _read_bytes

    parser = argparse.ArgumentParser(prog="python -m benchmarks.training_precision", description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=TrainingConfig.epochs, help="epochs per precision")
    parser.add_argument("--catalog", type=Path, default=SHARED_CATALOG, help="a landing folder with drops/")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fsp-train-precision-") as work:
        results = run(_catalog_of(args.catalog), _read_bytes, Path(work), args.epochs)
    for row in rows({"training_precision": results}):
        print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
