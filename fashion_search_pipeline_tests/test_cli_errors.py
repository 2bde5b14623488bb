"""`fashion-search` as a user meets it, each call in its own process: a mistake gets one clear line and
exit status 2 (a traceback only with --debug), --help shows defaults, --json and `models` are machine-readable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fashion_search_pipeline import config
from fashion_search_pipeline.demo_catalog import demo_items, write_drop
from fashion_search_pipeline.store.fusion import DEFAULT_STRATEGY
from fashion_search_pipeline_tests.data_folder import LOCATION_VARIABLES, materialize_data_folder, write_tiny_registry

MODEL = "tiny"


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A data folder with one small drop embedded by a tiny random-weight model (made once per module)."""
    home = tmp_path_factory.mktemp("cli") / "data"
    write_drop(home / "landing" / "drops" / "d1", demo_items(variants=1)[:12])
    write_tiny_registry(home, MODEL)
    materialize_data_folder(home, ["d1"], MODEL)
    return home


def fashion_search(home: Path, *args: str) -> subprocess.CompletedProcess:
    """`fashion-search ARGS` in a fresh process whose only location setting is FASHION_SEARCH_HOME=home."""
    env = {key: value for key, value in os.environ.items() if key not in (*LOCATION_VARIABLES, "DAGSTER_HOME")}
    env[config.HOME_ENV] = str(home)
    command = [sys.executable, "-m", "fashion_search_pipeline.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=home.parent)


def assert_user_error(run: subprocess.CompletedProcess, *expected: str) -> None:
    assert run.returncode == 2, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    for text in expected:
        assert text in lines[0], lines[0]


def test_unknown_model_is_one_line_naming_the_registered_ones(home):
    assert_user_error(fashion_search(home, "search", "red", "dress", "--model", "nope"), "'nope'", MODEL)


def test_bad_filter_is_one_line(home):
    assert_user_error(fashion_search(home, "search", "red", "--where", "no_such_column = 'x'"), "no_such_column")


@pytest.mark.parametrize("k", ["0", "-3", "many"])
def test_k_must_be_positive(home, k):
    assert_user_error(fashion_search(home, "search", "red", "-k", k), "-k", "--help")


def test_missing_image_is_one_line(home):
    missing = home / "no-such.jpg"
    assert_user_error(fashion_search(home, "search", "--image", str(missing)), str(missing), "does not exist")


def test_mistyped_db_is_one_line_and_creates_nothing(home):
    typo = home / "lancdb"
    assert_user_error(fashion_search(home, "search", "red", "--db", str(typo)), str(typo))
    assert not typo.exists()
    assert_user_error(fashion_search(home, "serve", "--db", str(typo)), str(typo))
    assert not typo.exists()


def test_text_and_image_together_is_one_line(home):
    image = next((home / "landing" / "drops" / "d1" / "images").iterdir())
    assert_user_error(fashion_search(home, "search", "red", "--image", str(image)), "not both")


def test_unknown_model_for_materialize_is_one_line(home):
    assert_user_error(fashion_search(home, "materialize", "--model", "nope"), "'nope'")


def test_debug_shows_the_traceback(home):
    run = fashion_search(home, "search", "red", "--model", "nope", "--debug")
    assert run.returncode != 0
    assert "Traceback" in run.stderr and "UsageError" in run.stderr


def test_help_shows_defaults():
    run = fashion_search(Path.cwd() / "data", "search", "--help")
    assert run.returncode == 0
    assert "(default: 10)" in run.stdout


def test_search_json_has_model_version_fusion_and_attributes(home):
    run = fashion_search(home, "search", "red", "dress", "-k", "3", "--json")
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout)
    assert answer["model"] == MODEL and answer["text"] == "red dress" and answer["fusion"] == DEFAULT_STRATEGY
    assert len(answer["model_version"]) >= 8
    assert [row["rank"] for row in answer["results"]] == [1, 2, 3]
    assert {"item_id", "description", "score", "colour", "gender"} <= set(answer["results"][0])


def test_search_table_shows_model_fusion_and_attributes(home):
    run = fashion_search(home, "search", "red", "dress", "-k", "3")
    assert run.returncode == 0, run.stderr
    assert f"model {MODEL} " in run.stdout and f"fusion {DEFAULT_STRATEGY}" in run.stdout
    assert "colour" in run.stdout and "gender" in run.stdout


def test_models_lists_status_version_and_row_counts(home):
    run = fashion_search(home, "models", "--json")
    assert run.returncode == 0, run.stderr
    (row,) = json.loads(run.stdout)["models"]
    assert row["model"] == MODEL and row["status"] == "loadable"
    assert row["image rows"] == row["text rows"] == 12
    assert len(row["version"]) >= 8
    table = fashion_search(home, "models")
    assert table.returncode == 0 and MODEL in table.stdout and "loadable" in table.stdout
