"""A contact sheet: rows of captioned thumbnails, as a PNG for asset metadata."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

from PIL import Image, ImageDraw, ImageFont

THUMB = 80
CAPTION = 14
LABEL_WIDTH = 150


def contact_sheet(
    rows: Sequence[tuple[str, Sequence[str]]], read_image: Callable[[str], bytes], *, per_row: int = 8
) -> bytes:
    """PNG bytes: one line per (label, image URIs), at most `per_row` thumbnails each; unreadable
    images are grey tiles."""
    width = LABEL_WIDTH + per_row * (THUMB + 4)
    sheet = Image.new("RGB", (width, max(1, len(rows)) * (THUMB + CAPTION)), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=11)
    for line, (label, uris) in enumerate(rows):
        top = line * (THUMB + CAPTION)
        draw.text((4, top + THUMB // 2), label[:24], fill="black", font=font)
        for column, uri in enumerate(list(uris)[:per_row]):
            sheet.paste(_tile(uri, read_image), (LABEL_WIDTH + column * (THUMB + 4), top))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _tile(uri: str, read_image: Callable[[str], bytes]) -> Image.Image:
    tile = Image.new("RGB", (THUMB, THUMB), (225, 225, 225))
    try:
        picture = Image.open(io.BytesIO(read_image(uri)))
        picture.thumbnail((THUMB, THUMB))
        tile.paste(picture.convert("RGB"), ((THUMB - picture.width) // 2, (THUMB - picture.height) // 2))
    except Exception:  # noqa: BLE001 - an unreadable image must not break the report
        pass
    return tile
