"""Loading the code location (webserver start, `dagster definitions validate`, reload) imports no heavy library,
and Dagster's tools find it: `defs` is an `@dg.definitions` function built when Dagster loads it.

torch, open_clip, lancedb and the rest load when a step runs: each module the definitions import keeps
them inside the functions that use them (or behind TYPE_CHECKING for annotations).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# pyarrow stays: dagster and the IO manager need it. pandas is what `import lancedb` drags in.
HEAVY = ("torch", "open_clip", "torchvision", "lancedb", "ray", "matplotlib", "pandas", "safetensors")
REPO = Path(__file__).resolve().parents[1]


def _environment(home: Path) -> dict[str, str]:
    """This environment with the data folder and the Dagster instance moved to `home`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("FASHION_SEARCH_", "DAGSTER_"))}
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    return {**env, "FASHION_SEARCH_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}


def test_importing_and_building_the_definitions_imports_no_heavy_library(tmp_path):
    probe = (
        "import json, sys\n"
        "import fashion_search_pipeline.definitions as definitions\n"
        "imported = sorted({name.split('.')[0] for name in sys.modules})\n"
        "built = definitions.defs()\n"
        f"heavy = set({HEAVY!r})\n"
        "loaded = sorted({name.split('.')[0] for name in sys.modules} & heavy)\n"
        "print(json.dumps({'file': definitions.__file__, 'built': type(built).__name__,\n"
        "                  'assets': len(list(built.assets)), 'loaded': loaded,\n"
        "                  'imported_heavy': sorted(set(imported) & heavy)}))\n"
    )
    child = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=300,
                           env=_environment(tmp_path))
    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout.strip().splitlines()[-1])
    assert Path(report["file"]).is_relative_to(REPO / "fashion_search_pipeline")
    assert report["built"] == "Definitions" and report["assets"] > 0
    assert report["loaded"] == [] and report["imported_heavy"] == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [
        ["dagster", "definitions", "validate", "-w", "workspace.yaml"],
        ["dg", "check", "defs"],
        ["dg", "list", "defs", "--json"],
    ],
    ids=["dagster-definitions-validate", "dg-check-defs", "dg-list-defs"],
)
def test_dagster_tools_load_the_code_location(tmp_path, command):
    executable = Path(sys.executable).with_name(command[0])
    child = subprocess.run([str(executable), *command[1:]], capture_output=True, text=True, cwd=REPO, timeout=300,
                           env=_environment(tmp_path))
    assert child.returncode == 0, child.stdout + child.stderr
    if command[1] == "list":
        listed = json.loads(child.stdout[child.stdout.index("{"):])
        keys = {asset["asset_key"] for asset in listed["assets"]}
        assert {"catalog_items", "embeddings", "domain_clip", "fusion_choices"} <= keys
