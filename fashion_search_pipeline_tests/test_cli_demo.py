"""`fashion-search demo`, the README's main command, end to end offline with a short training budget."""

from __future__ import annotations

import re

from fashion_search_pipeline.cli import DEMO_QUERIES, main
from fashion_search_pipeline_tests.data_folder import use_data_folder


def test_demo_trains_domain_clip_and_prints_search_results(tmp_path, monkeypatch, capsys):
    use_data_folder(monkeypatch, tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the pretrained models are skipped, as on a machine without network

    assert main(["demo", "--train-seconds", "10", "--queries", "1", "-k", "4"]) == 0

    out = capsys.readouterr().out
    assert re.search(r"domain-clip [0-9a-f]{16} \(\d+\.\ds of training\): held-out text->image MRR", out)
    assert "model openai-clip: not available here, skipped" in out
    assert "**Recommendation:** Use model `domain-clip`" in out
    results = out[out.index(f"[domain-clip] {DEMO_QUERIES[0]!r}"):]
    assert len(re.findall(r"│ \d+\s+┆", results)) == 4  # k rows for the query
    assert (tmp_path / "models" / "domain-clip" / "current" / "model.pt").is_file()


def test_demo_refuses_a_training_budget_that_is_not_positive(tmp_path, monkeypatch, capsys):
    use_data_folder(monkeypatch, tmp_path)
    assert main(["demo", "--train-seconds", "0"]) == 2
    assert "--train-seconds must be positive" in capsys.readouterr().err
