"""Loading the code location (webserver start, `dagster definitions validate`, reload) imports no heavy library.

torch, open_clip, lancedb and the rest load when a step runs: each module the definitions import keeps
them inside the functions that use them (or behind TYPE_CHECKING for annotations).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# pyarrow stays: dagster and the IO manager need it. pandas is what `import lancedb` drags in.
HEAVY = ("torch", "open_clip", "torchvision", "lancedb", "ray", "matplotlib", "pandas", "safetensors")
REPO = Path(__file__).resolve().parents[1]


def test_importing_the_definitions_imports_no_heavy_library():
    probe = (
        "import json, sys\n"
        "import fashion_search_pipeline.definitions as definitions\n"
        f"loaded = sorted({{name.split('.')[0] for name in sys.modules}} & set({HEAVY!r}))\n"
        "print(json.dumps({'file': definitions.__file__, 'loaded': loaded}))\n"
    )
    child = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout.strip().splitlines()[-1])
    assert Path(report["file"]).is_relative_to(REPO / "fashion_search_pipeline")
    assert report["loaded"] == []
