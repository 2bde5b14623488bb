"""The parts of `make bench` whose correctness its figures rest on: ground truth and vector shape."""

from __future__ import annotations

import json

import numpy as np

from benchmarks.report import Row, render, write_json
from benchmarks.vectors import ClusteredEmbeddings, ExactTopK


def test_generated_vectors_are_unit_length_reproducible_and_clip_like():
    source = ClusteredEmbeddings(64, centroids=50)
    vectors = source.sample(2_000, seed=1)
    assert vectors.shape == (2_000, 64) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(vectors, source.sample(2_000, seed=1))
    cosines = vectors[:500] @ vectors[:500].T
    # A shared direction: unrelated items are far from orthogonal, as with real CLIP embeddings.
    assert cosines[np.triu_indices(500, 1)].mean() > 0.3
    chunks = list(source.chunks(2_500, 1_000, seed=3))
    assert [len(chunk) for chunk in chunks] == [1_000, 1_000, 500]


def test_exact_top_k_over_chunks_matches_one_full_sort():
    source = ClusteredEmbeddings(32, centroids=20)
    vectors, queries = source.sample(3_000, seed=1), source.sample(15, seed=2)
    exact = ExactTopK(queries, 10)
    for start in range(0, 3_000, 700):
        exact.add(vectors[start:start + 700], start)
    expected = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(exact.rows, expected)


def test_the_table_and_its_json(tmp_path):
    rows = [Row("image: end to end vs ceiling", "4.0 img/s", "5.0 img/s", 0.8, ">= 0.8", True),
            Row("query: p99", "20 ms", "10 ms p50", 2.0)]
    text = render(rows, "bench")
    assert text.splitlines()[0] == "bench"
    assert "| 0.80  | >= 0.8 | met" in text
    path = write_json({"profile": "quick"}, rows, tmp_path)
    saved = json.loads(path.read_text())
    assert saved == json.loads((tmp_path / "latest.json").read_text())
    assert (saved["profile"], saved["table"][1]["ratio"]) == ("quick", 2.0)
