"""The benchmark's one table (every figure a ratio of two measurements from the same run) and its JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path


@dataclass(frozen=True)
class Row:
    """One line of the table: a measured value, what it is compared with, their ratio, the target."""

    figure: str
    value: str
    reference: str
    ratio: float | None
    target: str = ""
    met: bool | None = None


def render(rows: list[Row], title: str) -> str:
    """A plain-text table, one row per figure."""
    header = ("figure", "measured", "compared with", "ratio", "target", "")
    lines = [
        (
            row.figure,
            row.value,
            row.reference,
            "" if row.ratio is None else f"{row.ratio:.2f}",
            row.target,
            {True: "met", False: "MISSED", None: ""}[row.met],
        )
        for row in rows
    ]
    widths = [max(len(cells[i]) for cells in [header, *lines]) for i in range(len(header))]
    rule = "-+-".join("-" * width for width in widths)

    def fmt(cells) -> str:
        return " | ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip()

    return "\n".join([title, fmt(header), rule, *map(fmt, lines)])


def write_json(results: dict, rows: list[Row], folder: Path) -> Path:
    """Write the results to <folder>/<UTC timestamp>.json and <folder>/latest.json; returns the first."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    document = json.dumps({"timestamp": stamp, "table": [asdict(row) for row in rows], **results}, indent=2)
    path = folder / f"{stamp}.json"
    path.write_text(document + "\n", encoding="utf-8")
    (folder / "latest.json").write_text(document + "\n", encoding="utf-8")
    return path
