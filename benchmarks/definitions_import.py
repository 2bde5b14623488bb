"""How long loading the code location takes: `import fashion_search_pipeline.definitions` in fresh processes.

Compared, in the same run and interleaved, with the same import followed by the libraries a step needs
(torch, open_clip, lancedb): what every definitions load paid before they were imported lazily. Each
child reports its own import time and how many torch modules it holds, so process start is left out.

    python -m benchmarks.definitions_import --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.report import Row

REPO = Path(__file__).resolve().parents[1]
TARGET_SPEEDUP = 4.0
HEAVY_LIBRARIES = ("torch", "open_clip", "lancedb")

_CHILD = """
import json, sys, time
started = time.perf_counter()
import fashion_search_pipeline.definitions
for name in {heavy!r}:
    __import__(name)
seconds = time.perf_counter() - started
print(json.dumps({{"seconds": seconds, "torch_modules": sum(m.split(".")[0] == "torch" for m in sys.modules)}}))
"""


def time_import(heavy: tuple[str, ...]) -> dict:
    """One fresh interpreter: seconds to import the definitions (then `heavy`), and its torch module count."""
    child = subprocess.run(
        [sys.executable, "-c", _CHILD.format(heavy=heavy)], check=True, capture_output=True, text=True, cwd=REPO
    )
    return json.loads(child.stdout.strip().splitlines()[-1])


def run(rounds: int, log) -> dict:
    """Median import seconds of the definitions alone and with the heavy libraries, `rounds` each, interleaved."""
    alone, with_heavy = [], []
    for round_number in range(rounds):
        alone.append(time_import(()))
        with_heavy.append(time_import(HEAVY_LIBRARIES))
        log(f"definitions import round {round_number + 1}/{rounds}: {alone[-1]['seconds']:.2f} s "
            f"alone, {with_heavy[-1]['seconds']:.2f} s with {', '.join(HEAVY_LIBRARIES)}")
    return {
        "rounds": rounds,
        "seconds": statistics.median(result["seconds"] for result in alone),
        "seconds_with_heavy": statistics.median(result["seconds"] for result in with_heavy),
        "torch_modules": max(result["torch_modules"] for result in alone),
        "torch_modules_with_heavy": max(result["torch_modules"] for result in with_heavy),
    }


def rows(results: dict) -> list[Row]:
    """The table row: definitions import against the same import with the step's libraries."""
    timing = results["definitions_import"]
    speedup = timing["seconds_with_heavy"] / timing["seconds"]
    return [
        Row(
            f"load: definitions import ({timing['torch_modules']} torch modules) vs with "
            f"{', '.join(HEAVY_LIBRARIES)} ({timing['torch_modules_with_heavy']}), median of {timing['rounds']}",
            f"{timing['seconds']:.2f} s",
            f"{timing['seconds_with_heavy']:.2f} s",
            speedup,
            f">= {TARGET_SPEEDUP:g}x",
            speedup >= TARGET_SPEEDUP,
        )
    ]


def main(argv: list[str] | None = None) -> int:
    """Run only this benchmark and print its row."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.definitions_import")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    results = {"definitions_import": run(args.rounds, lambda message: print(message, file=sys.stderr))}
    for row in rows(results):
        print(f"{row.figure}: {row.value} vs {row.reference}, ratio {row.ratio:.2f} (target {row.target})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
