"""Model availability from files alone: local checkpoints, an untrained domain-clip, hub models offline."""

from __future__ import annotations

from fashion_search_pipeline.models.availability import availability
from fashion_search_pipeline.models.checkpoints import TINY_CONFIG, write_random_checkpoint
from fashion_search_pipeline.models.registry import DOMAIN_MODEL, ModelSpec, domain_model_spec


def test_a_local_checkpoint_is_available_once_its_file_exists(tmp_path):
    spec = ModelSpec("local", str(TINY_CONFIG), str(tmp_path / "weights.pt"))
    missing = availability(spec)
    assert not missing.available
    assert missing.describe().startswith(f"unavailable: pretrained file {tmp_path / 'weights.pt'} does not exist")
    assert "registry file" in missing.fix
    write_random_checkpoint(TINY_CONFIG, tmp_path / "weights.pt", seed=0)
    assert availability(spec).available and availability(spec).describe() == "available"


def test_an_untrained_domain_clip_says_how_to_train_it(tmp_path):
    status = availability(domain_model_spec(tmp_path / "models"))
    assert status.model == DOMAIN_MODEL
    assert status.describe() == (
        "unavailable: it has not been trained here yet "
        "(fix: materialize the domain_clip asset (Dagster UI, or `fashion-search demo`))"
    )


def test_a_hub_model_offline_and_not_cached_is_unavailable_with_its_repository(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    spec = ModelSpec("hub", "hf-hub:org/some-clip")
    status = availability(spec, hub_reachable=False)
    assert not status.available
    assert "org/some-clip" in status.reason and "not in the local cache" in status.reason
    assert availability(spec, hub_reachable=True).available  # it would download on first load
