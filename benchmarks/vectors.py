"""Generated embeddings shaped like CLIP's: unit vectors around many centroids, anisotropic.

Real CLIP embeddings are far from uniform on the sphere: they share a common direction (two
unrelated images still have cosine ~0.4), their variance decays over a few dominant directions,
and products of one kind form tight clusters. Uniform random vectors would make ANN search look
harder and exact search easier than on a real catalog.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

DIM = 512
CENTROIDS = 2_000
# Weights of the shared direction, the item's centroid and its own noise (unit-norm each).
SHARED_WEIGHT = 1.05
CENTROID_WEIGHT = 1.0
NOISE_WEIGHT = 0.6


class ClusteredEmbeddings:
    """A reproducible source of unit vectors: shared direction + one of `centroids` + noise."""

    def __init__(self, dim: int = DIM, centroids: int = CENTROIDS, *, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.dim = dim
        self._rotation = np.linalg.qr(rng.standard_normal((dim, dim)))[0].astype(np.float32)
        self._scales = (1.0 / np.sqrt(np.arange(1, dim + 1))).astype(np.float32)
        self._scales /= np.sqrt((self._scales**2).sum())  # unit expected norm
        shared = rng.standard_normal(dim).astype(np.float32)
        self._shared = shared / np.linalg.norm(shared)
        self._centroids = _unit(self._anisotropic(rng, centroids))

    def sample(self, n: int, *, seed: int) -> np.ndarray:
        """n float32 unit vectors (n, dim); the same seed gives the same vectors."""
        rng = np.random.default_rng(seed)
        centres = self._centroids[rng.integers(0, len(self._centroids), n)]
        points = SHARED_WEIGHT * self._shared + CENTROID_WEIGHT * centres + NOISE_WEIGHT * self._anisotropic(rng, n)
        return _unit(points)

    def chunks(self, n: int, chunk: int, *, seed: int) -> Iterator[np.ndarray]:
        """n vectors in chunks of at most `chunk` rows (bounded memory for large n)."""
        for index, start in enumerate(range(0, n, chunk)):
            yield self.sample(min(chunk, n - start), seed=seed * 1_000_003 + index)

    def _anisotropic(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return (rng.standard_normal((n, self.dim), dtype=np.float32) * self._scales) @ self._rotation


def _unit(points: np.ndarray) -> np.ndarray:
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


class ExactTopK:
    """Each query's k most cosine-similar vectors (unit vectors), over vectors seen chunk by chunk."""

    def __init__(self, queries: np.ndarray, k: int):
        self.queries = queries
        self.k = k
        self._scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
        self._rows = np.empty((len(queries), 0), dtype=np.int64)

    def add(self, vectors: np.ndarray, first_row: int) -> None:
        """Take in vectors whose row numbers start at `first_row`."""
        scores = self.queries @ vectors.T
        top = np.argpartition(-scores, min(self.k, scores.shape[1] - 1), axis=1)[:, :self.k]
        scores = np.concatenate([self._scores, np.take_along_axis(scores, top, axis=1)], axis=1)
        rows = np.concatenate([self._rows, top + first_row], axis=1)
        keep = np.argsort(-scores, axis=1, kind="stable")[:, :self.k]
        self._scores = np.take_along_axis(scores, keep, axis=1)
        self._rows = np.take_along_axis(rows, keep, axis=1)

    @property
    def rows(self) -> np.ndarray:
        """(queries, k) row numbers, best first."""
        return self._rows
