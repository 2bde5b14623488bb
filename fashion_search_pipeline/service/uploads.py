"""Untrusted request bodies and query images: a body-size limit enforced before the body is read,
and image decoding that refuses non-images, truncated files and decompression bombs."""

from __future__ import annotations

import io
import json
import warnings

from PIL import Image, UnidentifiedImageError

from fashion_search_pipeline.catalog.images import IMAGE_FORMATS

# A query photo needs no more than this; bigger headers are refused before the pixels are decoded.
MAX_QUERY_PIXELS = 40_000_000


class QueryImageError(ValueError):
    """Bytes that are not a usable query image; the message says why."""


class BodyTooLarge(Exception):
    """The request body went past the limit while it was being read."""


def decode_query_image(data: bytes, *, max_pixels: int = MAX_QUERY_PIXELS) -> Image.Image:
    """The fully decoded RGB image in `data`, or QueryImageError saying what is wrong with it."""
    if not data:
        raise QueryImageError("the image is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except UnidentifiedImageError:
        raise QueryImageError(f"not an image in a supported format ({', '.join(IMAGE_FORMATS)})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise QueryImageError(f"decompression bomb refused: {error}") from None
    except Exception as error:  # any header the decoder chokes on is bad input, not a crash
        raise QueryImageError(f"unreadable image header: {error}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise QueryImageError(
            f"decompression bomb refused: {width}x{height} pixels exceeds the limit of {max_pixels}"
        )
    try:
        image.load()
    except Exception as error:  # truncated or corrupt pixel data
        raise QueryImageError(f"cannot decode the {image.format or 'image'}: {error}") from None
    return image.convert("RGB")


class BodyLimitMiddleware:
    """ASGI middleware answering 413 for a body over `max_bytes`: at once when Content-Length
    says so (the body is never read), else as soon as the bytes read pass the limit."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(send)
            return
        seen = 0
        over = refused = False

        async def limited_receive():
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    over = True
                    raise BodyTooLarge()
            return message

        async def refusing_send(message):
            # Frameworks turn an error while reading the body into their own answer (FastAPI: 400);
            # once the limit was passed, that answer is replaced by the 413.
            nonlocal refused
            if not over:
                await send(message)
            elif not refused:
                refused = True
                await self._refuse(send)

        try:
            await self.app(scope, limited_receive, refusing_send)
        except BodyTooLarge:
            if not refused:
                await self._refuse(send)

    async def _refuse(self, send) -> None:
        body = json.dumps({"detail": f"request body over the limit of {self.max_bytes} bytes"}).encode()
        await send({
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close")],
        })
        await send({"type": "http.response.body", "body": body})
