"""The checked-in gRPC stubs are what `make proto` generates from proto/ today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_checked_in_stubs_are_not_stale(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "tools" / "gen_proto.py"), "--out", str(tmp_path)], check=True)
    generated = sorted((tmp_path / "neuronmap" / "v1").glob("*_pb2*"))
    assert generated, "protoc generated nothing"
    checked_in = ROOT / "clients" / "python" / "neuronmap" / "v1"
    stale = [p.name for p in generated if (checked_in / p.name).read_text() != p.read_text()]
    assert not stale, f"stubs differ from proto/: {stale}; run `make proto`"
    extra = {p.name for p in checked_in.glob("*_pb2*")} - {p.name for p in generated}
    assert not extra, f"stubs without a .proto: {sorted(extra)}"
