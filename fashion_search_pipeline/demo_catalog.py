"""A small synthetic fashion catalog for the demo: coloured garment silhouettes with captions.

Each item is one garment type drawn in one colour, with jitter in size, position and shade,
so a model trained on the catalog can learn both colour and shape words.
"""

from __future__ import annotations

import csv
import io
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {
    "Red": (200, 35, 35),
    "Blue": (35, 70, 200),
    "Green": (40, 150, 60),
    "Yellow": (235, 200, 40),
    "Black": (25, 25, 25),
    "White": (250, 250, 250),
    "Pink": (240, 140, 190),
}
ARTICLES = ("Tshirt", "Trousers", "Dress", "Shoes", "Handbag", "Cap")
BRANDS = ("Nova", "Urbane", "Kestrel", "Mira", "Fenwick")
STYLES = {
    "Tshirt": ("Cotton", "Round Neck", "Graphic"),
    "Trousers": ("Slim Fit", "Chino", "Linen"),
    "Dress": ("Summer", "Maxi", "Wrap"),
    "Shoes": ("Running", "Canvas", "Leather"),
    "Handbag": ("Leather", "Tote", "Mini"),
    "Cap": ("Baseball", "Trucker", "Sports"),
}
IMAGE_SIZE = 128
BACKGROUND = (196, 190, 182)


@dataclass(frozen=True)
class DemoItem:
    """One synthetic product."""

    item_id: str
    description: str
    gender: str
    article_type: str
    colour: str


def _shape(draw: ImageDraw.ImageDraw, article: str, box: tuple[float, float, float], fill) -> None:
    cx, cy, s = box  # centre and half-size
    if article == "Tshirt":
        draw.polygon(
            [(cx - s, cy - s * 0.7), (cx - s * 0.45, cy - s), (cx + s * 0.45, cy - s), (cx + s, cy - s * 0.7),
             (cx + s * 0.8, cy - s * 0.3), (cx + s * 0.5, cy - s * 0.45), (cx + s * 0.5, cy + s),
             (cx - s * 0.5, cy + s), (cx - s * 0.5, cy - s * 0.45), (cx - s * 0.8, cy - s * 0.3)],
            fill=fill,
        )
    elif article == "Trousers":
        draw.polygon(
            [(cx - s * 0.55, cy - s), (cx + s * 0.55, cy - s), (cx + s * 0.65, cy + s), (cx + s * 0.1, cy + s),
             (cx, cy - s * 0.3), (cx - s * 0.1, cy + s), (cx - s * 0.65, cy + s)],
            fill=fill,
        )
    elif article == "Dress":
        draw.polygon(
            [(cx - s * 0.3, cy - s), (cx + s * 0.3, cy - s), (cx + s * 0.25, cy - s * 0.3),
             (cx + s * 0.9, cy + s), (cx - s * 0.9, cy + s), (cx - s * 0.25, cy - s * 0.3)],
            fill=fill,
        )
    elif article == "Shoes":
        draw.polygon(
            [(cx - s, cy + s * 0.1), (cx - s * 0.2, cy - s * 0.35), (cx + s * 0.15, cy - s * 0.1),
             (cx + s, cy + s * 0.15), (cx + s, cy + s * 0.45), (cx - s, cy + s * 0.45)],
            fill=fill,
        )
    elif article == "Handbag":
        draw.arc([cx - s * 0.5, cy - s * 1.0, cx + s * 0.5, cy - s * 0.1], 180, 360, fill=fill, width=max(2, int(s / 8)))
        draw.rectangle([cx - s * 0.8, cy - s * 0.45, cx + s * 0.8, cy + s * 0.7], fill=fill)
    elif article == "Cap":
        draw.pieslice([cx - s * 0.75, cy - s * 0.8, cx + s * 0.75, cy + s * 0.6], 180, 360, fill=fill)
        draw.rectangle([cx - s * 0.1, cy - s * 0.12, cx + s * 1.05, cy + s * 0.05], fill=fill)
    else:
        raise ValueError(f"unknown article type {article!r}")


def render(article: str, colour: str, rng: random.Random) -> Image.Image:
    """Draw one garment of `article` type in `colour`, jittered by `rng`."""
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), tuple(c + rng.randint(-12, 12) for c in BACKGROUND))
    draw = ImageDraw.Draw(image)
    base = COLOURS[colour]
    fill = tuple(max(0, min(255, c + rng.randint(-18, 18))) for c in base)
    half = IMAGE_SIZE * rng.uniform(0.28, 0.38)
    centre = (IMAGE_SIZE / 2 + rng.uniform(-8, 8), IMAGE_SIZE / 2 + rng.uniform(-8, 8), half)
    _shape(draw, article, centre, fill)
    return image


def demo_items(variants: int = 2, seed: int = 7) -> list[DemoItem]:
    """Every colour x article type, `variants` times, with captions and attributes."""
    rng = random.Random(seed)
    items = []
    for article in ARTICLES:
        for colour in COLOURS:
            for variant in range(variants):
                gender = "Women" if article == "Dress" else rng.choice(("Men", "Women", "Unisex"))
                style = rng.choice(STYLES[article])
                brand = rng.choice(BRANDS)
                item_id = f"{article.lower()}-{colour.lower()}-{variant + 1}"
                description = f"{brand} {gender} {colour} {style} {article}"
                items.append(DemoItem(item_id, description, gender, article, colour))
    return items


def write_drop(folder: Path, items: list[DemoItem], *, seed: int = 7, marker: bool = True) -> Path:
    """Write `items` as a catalog drop (captions.csv, images/, and the _SUCCESS marker) into `folder`."""
    rng = random.Random(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    writer = csv.writer(text, delimiter="#", lineterminator="\n")
    writer.writerow(["item_id", "image_path", "description", "gender", "article_type", "colour"])
    for item in items:
        path = f"images/{item.item_id}.jpg"
        render(item.article_type, item.colour, rng).save(folder / path, format="JPEG", quality=90)
        writer.writerow([item.item_id, path, item.description, item.gender, item.article_type, item.colour])
    (folder / "captions.csv").write_text(text.getvalue(), encoding="utf-8")
    if marker:
        (folder / "_SUCCESS").write_bytes(b"")
    return folder


def write_demo_landing(landing: Path, *, variants: int = 2, seed: int = 7) -> list[str]:
    """Two demo drops under `landing`/drops: most items first, the rest a week later. Returns drop ids."""
    items = demo_items(variants, seed)
    shuffled = random.Random(seed).sample(items, len(items))
    cut = len(shuffled) * 2 // 3
    drops = {"demo-2026-11-01": shuffled[:cut], "demo-2026-11-08": shuffled[cut:]}
    for drop_id, drop_items in drops.items():
        write_drop(landing / "drops" / drop_id, sorted(drop_items, key=lambda i: i.item_id), seed=seed)
    return sorted(drops)
