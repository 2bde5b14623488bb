"""Query encoding for the service: concurrent queries of one model and modality are micro-batched
(see batching.py) into one encoder call; with a zero window each request encodes on its own."""

from __future__ import annotations

import threading

import numpy as np
from PIL import Image

from fashion_search_pipeline.search import CatalogSearch
from fashion_search_pipeline.service.batching import MicroBatcher


class QueryEncoder:
    """Text and image query vectors, with the model version that encoded them."""

    def __init__(self, search: CatalogSearch, window_s: float, max_batch: int, batch_sizes=None):
        self._search = search
        self._window_s = window_s
        self._max_batch = max_batch
        self._batch_sizes = batch_sizes  # a prometheus Histogram labelled (model, modality), or None
        self._batchers: dict[tuple[str, str], MicroBatcher] = {}
        self._versions: dict[str, str] = {}
        self._lock = threading.Lock()

    @property
    def batching(self) -> bool:
        """Whether concurrent queries are gathered into batches."""
        return self._window_s > 0 and self._max_batch > 1

    def text(self, model: str, text: str) -> tuple[np.ndarray, str]:
        """The vector of one text query and the model version."""
        return self._encode(model, "text", text)

    def image(self, model: str, image: Image.Image) -> tuple[np.ndarray, str]:
        """The vector of one decoded query image and the model version."""
        return self._encode(model, "image", image)

    def version(self, model: str) -> str | None:
        """The version the model's last queries were encoded with (None before its first)."""
        return self._versions.get(model)

    def close(self) -> None:
        """Stop the batchers' worker threads."""
        with self._lock:
            batchers, self._batchers = list(self._batchers.values()), {}
        for batcher in batchers:
            batcher.close()

    def _encode(self, model: str, modality: str, query) -> tuple[np.ndarray, str]:
        if not self.batching:
            return self._batch(model, modality, [query])[0]
        return self._batcher(model, modality).submit(query)

    def _batcher(self, model: str, modality: str) -> MicroBatcher:
        key = (model, modality)
        with self._lock:
            batcher = self._batchers.get(key)
            if batcher is None:
                on_batch = None
                if self._batch_sizes is not None:
                    on_batch = self._batch_sizes.labels(model, modality).observe
                batcher = MicroBatcher(
                    lambda queries: self._batch(model, modality, queries),
                    window_s=self._window_s, max_batch=self._max_batch,
                    name=f"encode-{model}-{modality}", on_batch=on_batch,
                )
                self._batchers[key] = batcher
        return batcher

    def _batch(self, model: str, modality: str, queries: list) -> list[tuple[np.ndarray, str]]:
        if modality == "text":
            encoded = self._search.encode(model, texts=queries)
        else:
            encoded = self._search.encode(model, images=queries)
        self._versions[model] = encoded.version
        return [(vector, encoded.version) for vector in encoded.vectors]
