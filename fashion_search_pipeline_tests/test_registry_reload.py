"""A registry file that becomes invalid while `dagster dev` runs: the reload names the file and line, and
the last good registry stays served (models.registry.load_registry_or_last_good, definitions)."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetCheckKey, AssetKey, AssetSelection, instance_for_test, materialize

from fashion_search_pipeline.config import Settings
from fashion_search_pipeline.definitions import build_definitions
from fashion_search_pipeline.models.checkpoints import TINY_CONFIG, write_random_checkpoint
from fashion_search_pipeline.models.registry import ModelRegistryError, load_registry, load_registry_or_last_good

REPO = Path(__file__).resolve().parents[1]
BROKEN_YAML = "include_defaults: false\nmodels:\n  tiny: {architecture: ./tiny.json, pretrained: ./tiny.pt\n  other: 1\n"
BROKEN_LINE = 4  # where yaml notices the unclosed flow mapping


@pytest.fixture
def home(tmp_path) -> Path:
    """A data folder whose registry file uses relative paths (next to the file) and the built-in models."""
    folder = tmp_path / "home"
    folder.mkdir()
    (folder / "tiny.json").write_text(TINY_CONFIG.read_text())
    write_random_checkpoint(TINY_CONFIG, folder / "tiny.pt", seed=0)
    (folder / "models.yaml").write_text("models:\n  tiny: {architecture: ./tiny.json, pretrained: ./tiny.pt}\n")
    return folder


def _settings(home: Path) -> Settings:
    return Settings.from_env({}, home=home, models_file=str(home / "models.yaml"))


def test_a_good_file_is_kept_and_served_while_the_file_is_broken(home):
    settings = _settings(home)
    good = load_registry_or_last_good(
        settings.models_file, models_root=settings.models_dir, last_good=settings.last_good_models_file
    )
    assert good.problem is None and good.models_file == settings.models_file
    assert settings.last_good_models_file.is_file()
    assert load_registry(settings.last_good_models_file) == good.specs, "the copy is self-contained (absolute paths)"
    assert good.specs["tiny"].pretrained == str(home.resolve() / "tiny.pt")
    assert set(good.specs) == {"tiny", "openai-clip", "fashion-clip", "domain-clip"}

    (home / "models.yaml").write_text(BROKEN_YAML)
    served = load_registry_or_last_good(
        settings.models_file, models_root=settings.models_dir, last_good=settings.last_good_models_file
    )
    assert served.specs == good.specs
    assert served.models_file == str(settings.last_good_models_file)
    assert served.problem.startswith(f"{home / 'models.yaml'}, line {BROKEN_LINE}: not valid YAML: ")
    assert "; serving the last good registry from 20" in served.problem
    assert str(settings.last_good_models_file) in served.problem and "\n" not in served.problem


def test_without_a_last_good_copy_the_load_fails_naming_file_and_line(home):
    settings = _settings(home)
    (home / "models.yaml").write_text(BROKEN_YAML)
    with pytest.raises(ModelRegistryError, match=rf"^{home / 'models.yaml'}, line {BROKEN_LINE}: not valid YAML"):
        load_registry_or_last_good(
            settings.models_file, models_root=settings.models_dir, last_good=settings.last_good_models_file
        )


def test_the_copy_of_another_registry_file_is_never_served(home):
    settings = _settings(home)
    other = home / "other.yaml"
    other.write_text((home / "models.yaml").read_text())
    load_registry_or_last_good(str(other), models_root=settings.models_dir, last_good=settings.last_good_models_file)
    (home / "models.yaml").write_text(BROKEN_YAML)
    with pytest.raises(ModelRegistryError, match=f"line {BROKEN_LINE}"):
        load_registry_or_last_good(
            settings.models_file, models_root=settings.models_dir, last_good=settings.last_good_models_file
        )


def test_reloaded_definitions_serve_the_last_good_registry_and_show_the_problem(home, caplog):
    settings = _settings(home)
    build_definitions(settings)
    (home / "models.yaml").write_text(BROKEN_YAML)
    with caplog.at_level(logging.ERROR, logger="dagster.builtin.fashion_search_pipeline.definitions"):
        defs = build_definitions(settings)
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert f"{home / 'models.yaml'}, line {BROKEN_LINE}" in record.getMessage()

    models = defs.resources["models"]
    assert models.models_file == str(settings.last_good_models_file) and "line 4" in models.problem
    graph = defs.resolve_asset_graph()
    assert graph.get(AssetKey("embeddings")).metadata["models_file_problem"] == models.problem
    partitions = graph.get(AssetKey("embeddings")).partitions_def.get_partition_keys()
    assert {key.keys_by_dimension["model"] for key in partitions} == {"tiny", "openai-clip", "fashion-clip", "domain-clip"}

    with instance_for_test() as instance:
        result = materialize(
            [*defs.assets, *defs.asset_checks],
            instance=instance,
            resources=defs.resources,
            selection=AssetSelection.checks(AssetCheckKey(AssetKey("embeddings"), "models_available")),
        )
    [evaluation] = result.get_asset_check_evaluations()
    assert not evaluation.passed
    assert evaluation.description.startswith(f"models file {home / 'models.yaml'}, line {BROKEN_LINE}: not valid YAML")
    assert "serving the last good registry from" in evaluation.description

    (home / "models.yaml").write_text("include_defaults: false\nmodels:\n  tiny: {architecture: ./tiny.json, pretrained: ./tiny.pt}\n")
    fixed = build_definitions(settings)
    assert fixed.resources["models"].problem is None
    assert "models_file_problem" not in fixed.resolve_asset_graph().get(AssetKey("embeddings")).metadata


def _validate(home: Path) -> subprocess.CompletedProcess:
    """`dagster definitions validate -w workspace.yaml` in a fresh process, on the data folder `home`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("FASHION_SEARCH_", "DAGSTER_"))}
    env.update(FASHION_SEARCH_HOME=str(home), FASHION_SEARCH_MODELS=str(home / "models.yaml"), DAGSTER_HOME=str(home / "dagster"))
    (home / "dagster").mkdir(exist_ok=True)
    dagster = Path(sys.executable).with_name("dagster")
    return subprocess.run([str(dagster), "definitions", "validate", "-w", str(REPO / "workspace.yaml")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_dagster_definitions_validate_keeps_loading_from_the_last_good_registry(home):
    assert (first := _validate(home)).returncode == 0, first.stderr
    (home / "models.yaml").write_text(BROKEN_YAML)
    served = _validate(home)
    assert served.returncode == 0, served.stdout + served.stderr
    logged = re.sub(r"\x1b\[[0-9;]*m", "", served.stdout + served.stderr)  # Dagster's console log, colours dropped
    assert f"ERROR - model registry: {home / 'models.yaml'}, line {BROKEN_LINE}: not valid YAML" in logged
    assert "serving the last good registry from" in logged

    (home / "models.last-good.yaml").unlink()
    failed = _validate(home)
    assert failed.returncode != 0
    assert f"{home / 'models.yaml'}, line {BROKEN_LINE}: not valid YAML" in failed.stdout + failed.stderr


def test_a_file_that_breaks_before_the_next_reload_leaves_steps_on_the_last_good_registry(home):
    settings = _settings(home)
    defs = build_definitions(settings)  # loaded while the file was good, as a running code location is
    models = defs.resources["models"]
    good = models.specs()
    (home / "models.yaml").write_text(BROKEN_YAML)
    assert models.specs() == good  # a step that re-reads the registry now serves the copy
    assert load_registry(settings.last_good_models_file) == good  # and the copy still names the file
    (home / "models.yaml").write_text("include_defaults: false\nmodels:\n  tiny: {architecture: ./tiny.json, pretrained: ./tiny.pt}\n")
    assert set(models.specs()) == {"tiny"}  # the fixed file is served again
