"""The thin client installs and runs without torch or the services' dependencies."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
# Poisoned: importing any of these raises ImportError.
heavy = ["torch", "transformers", "duckdb", "dask"]
for name in heavy + ["neuronmap_extractor", "neuronmap_catalog", "neuronmap_analyzer"]:
    sys.modules[name] = None
import neuronmap, neuronmap.cli, neuronmap.client, neuronmap.lake, neuronmap.export, neuronmap.server
parser = neuronmap.cli.build_parser()
parser.parse_args(["multi-extract", "--questions-file", "q.jsonl", "--layer-range", "0", "3"])
print("ok")
"""


def test_client_and_cli_import_without_torch_or_services() -> None:
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_pyproject_keeps_heavy_dependencies_in_extras() -> None:
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"])
    for heavy in ("torch", "transformers", "duckdb", "dask", "s3fs"):
        assert heavy not in base
    assert any(d.startswith("torch==2.13.0") for d in project["optional-dependencies"]["extractor"])
