"""MicroBatcher: concurrent submissions gathered into batches, each caller answered with its own result."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from fashion_search_pipeline.service.batching import MicroBatcher


def test_concurrent_items_share_batches_and_get_their_own_results():
    batches = []
    batcher = MicroBatcher(lambda items: (batches.append(len(items)), [item * 10 for item in items])[1],
                           window_s=0.05, max_batch=8)
    try:
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(batcher.submit, range(16)))
    finally:
        batcher.close()
    assert results == [item * 10 for item in range(16)]
    assert sum(batches) == 16 and max(batches) <= 8 and len(batches) < 16


def test_a_lone_item_waits_no_longer_than_the_window():
    batcher = MicroBatcher(lambda items: items, window_s=0.0, max_batch=4)
    try:
        assert batcher.submit("x") == "x"
    finally:
        batcher.close()


def test_a_failing_batch_fails_each_of_its_callers_and_the_next_batch_works():
    def process(items):
        if "bad" in items:
            raise ValueError("cannot encode 'bad'")
        return items

    batcher = MicroBatcher(process, window_s=5.0, max_batch=2)  # the batch closes when both have arrived
    try:
        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(batcher.submit, item) for item in ("bad", "good")]
            errors = [future.exception() for future in futures]
        assert all(isinstance(error, ValueError) for error in errors)
        assert batcher.submit("fine") == "fine"
    finally:
        batcher.close()


def test_a_process_returning_the_wrong_number_of_results_is_an_error():
    batcher = MicroBatcher(lambda items: [], window_s=0.0, max_batch=1)
    try:
        with pytest.raises(RuntimeError, match="gave 0 results"):
            batcher.submit(1)
    finally:
        batcher.close()


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(lambda items: items, window_s=0.01, max_batch=0)
