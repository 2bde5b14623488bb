"""The parts of `make bench` whose correctness its figures rest on: ground truth, vector shape, and the
precision, profile and incremental measurements run small on a real tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks import (
    definitions_import,
    hardware,
    image_embedding,
    image_profile,
    incremental_drop,
    queries,
    tag_calibration,
)
from benchmarks.report import Row, render, write_json
from benchmarks.run import _query_rows
from benchmarks.vectors import ClusteredEmbeddings, ExactTopK
from fashion_search_pipeline.models.checkpoints import TINY_CONFIG
from fashion_search_pipeline.models.loading import load_clip
from fashion_search_pipeline.models.precision import FP32, MIN_COSINE
from fashion_search_pipeline.models.registry import ModelSpec
from fashion_search_pipeline.store.tables import connect


@pytest.fixture(scope="module")
def tiny_clip(tiny_checkpoint):
    return load_clip(ModelSpec("bench-tiny", str(TINY_CONFIG), str(tiny_checkpoint), device="cpu", precision="fp32"))


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


def test_precision_forwards_compare_bf16_weights_and_autocast_with_fp32(tiny_clip):
    bf16 = image_embedding.bf16_weights_copy(tiny_clip, tiny_clip)
    assert next(tiny_clip.model.parameters()).dtype == torch.float32  # a copy, the loaded model untouched
    measured = image_embedding.precision_forwards(tiny_clip, bf16, batch_size=2, rounds=2)
    assert set(measured["images_per_second"]) == {"fp32", "bf16_weights", "bf16_autocast"}
    assert all(rate > 0 for rate in measured["images_per_second"].values())
    assert min(measured["min_cosine_vs_fp32"].values()) >= MIN_COSINE


def test_image_profile_splits_an_images_time_into_stages(tiny_clip, tmp_path):
    uris = []
    for number, size in enumerate([(192, 256), (300, 200), (64, 64)]):
        path = tmp_path / f"{number}.jpg"
        Image.new("RGB", size, (40 * number, 90, 200)).save(path, "JPEG")
        uris.append(str(path))
    profile = image_profile.run(tiny_clip, uris, lambda uri: open(uri, "rb").read())
    stages = profile["ms_per_image_one_thread"]
    assert set(stages) == {"decode", "resize_and_crop_uint8", "normalise_per_batch",
                           "open_clip_preprocess_per_image", "forward"}
    assert all(ms > 0 for ms in stages.values()) and profile["image_size"] == [192, 256]
    assert profile["precision"] == FP32.label


def test_matmul_peak_names_the_size_that_reached_it():
    measured = hardware.matmul_gflops(torch.float32, sizes=(64, 128), min_seconds=0.01)
    assert measured["size"] in (64, 128) and measured["gflops"] > 0


def test_incremental_drop_takes_medians_of_interleaved_rounds(tmp_path):
    messages = []
    result = incremental_drop.run(tmp_path, 20, messages.append, rounds=2)
    assert result["rounds"] == 2 and len(messages) == 2
    assert result["vectors_embedded_incremental"] == 2 * 2  # the new drop's 2 items, image and text
    assert result["vectors_embedded_rebuild"] == 2 * 22
    low, high = result["ratio_range_over_rounds"]
    assert 0 < low <= high
    assert not (tmp_path / "incremental-db-0").exists() and not (tmp_path / "rebuild-db-1").exists()


@pytest.mark.slow  # two fresh interpreters importing the definitions
def test_definitions_import_times_fresh_processes_and_counts_their_torch_modules():
    results = {"definitions_import": definitions_import.run(1, log=lambda message: None)}
    timing = results["definitions_import"]
    assert timing["torch_modules"] == 0 and timing["torch_modules_with_heavy"] > 100
    assert 0 < timing["seconds"] < timing["seconds_with_heavy"]
    (row,) = definitions_import.rows(results)
    assert row.ratio == pytest.approx(timing["seconds_with_heavy"] / timing["seconds"])
    assert row.met == (row.ratio >= definitions_import.TARGET_SPEEDUP)


@pytest.mark.slow  # trains the small architecture twice, one epoch each
def test_training_precision_trains_both_precisions_on_the_same_items(tmp_path):
    from benchmarks import training_precision
    from benchmarks.run import _catalog_of, _read_bytes
    from fashion_search_pipeline.demo_catalog import write_demo_landing

    write_demo_landing(tmp_path / "landing", variants=2)
    results = {"training_precision": training_precision.run(
        _catalog_of(tmp_path / "landing"), _read_bytes, tmp_path / "work", epochs=1, log=lambda message: None)}
    runs = results["training_precision"]["runs"]
    assert (runs["fp32"]["ran_as"], runs["bf16"]["ran_as"]) == ("fp32", "bf16 autocast")
    assert all(run["epochs_completed"] == 1 and 0 < run["heldout_text_to_image_mrr"] <= 1 for run in runs.values())
    speed, mrr = training_precision.rows(results)
    assert speed.ratio == runs["bf16"]["samples_per_second"] / runs["fp32"]["samples_per_second"]
    assert mrr.met == (runs["bf16"]["heldout_text_to_image_mrr"]
                       >= runs["fp32"]["heldout_text_to_image_mrr"] - training_precision.MRR_TOLERANCE)


def test_the_query_bench_measures_recall_at_the_service_depth_with_both_refine_factors(tiny_clip, tmp_path):
    db_uri = str(tmp_path / "db")
    measured = queries.run(connect(db_uri), db_uri, tiny_clip, image_rows=12_000, text_rows=12_000, queries=4,
                           text_queries=["red dress", "blue jeans", "black shoes"], log=lambda _: None)
    deep = measured["deep_vector_search"]
    assert deep["limit"] == queries.DEEP_LIMIT
    assert (deep["chosen"]["refine_factor"], deep["short_search"]["refine_factor"]) == (1, 5)
    assert all(0.5 <= deep[name]["recall_at_100"] <= 1.0 for name in ("chosen", "short_search"))
    assert 0.5 <= measured["vector_search"]["recall_at_10"] <= 1.0
    rows = _query_rows({"queries": measured, "precision": {"chosen": "fp32"},
                        "single_query": {"bf16_weights": {"p50_ms": 1.0}, "fp32": {"p50_ms": 1.0}}})
    assert any("service depth" in row.figure for row in rows)


def test_tag_calibration_counts_precision_only_on_the_half_the_threshold_was_not_chosen_on():
    # Chosen on the even positions (0.9, 0.8, 0.6 right, 0.2 wrong) the threshold is 0.6, which keeps
    # 0.9 (wrong), 0.8 (right) and 0.7 (wrong) of the odd ones. The odd positions never reach 0.9,
    # so chosen there the threshold keeps nothing of the even ones.
    confidence = np.array([0.9, 0.9, 0.8, 0.8, 0.6, 0.7, 0.2, 0.1])
    correct = np.array([True, False, True, True, True, False, False, True])
    precision, kept = tag_calibration.carried_over_precision(confidence, correct, 0.9)
    assert kept == 3 and precision == pytest.approx(1 / 3)
