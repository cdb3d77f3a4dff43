"""bench/train_step.py runs each model and writes the train-step panel's results (numbers are not
asserted: speed is checked by `make bench`, never by tests)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _run(tmp_path: Path, *args: str) -> tuple[str, dict]:
    out = tmp_path / "train_step.json"
    proc = subprocess.run([sys.executable, str(BENCH / "train_step.py"), "--rounds", "1",
                           "--warmup", "1", "--json", str(out), *args],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


def test_the_mlp_row_is_printed_and_written_for_the_chart(tmp_path: Path) -> None:
    stdout, data = _run(tmp_path, "--only", "mlp", "--steps", "1", "--batch", "8")
    assert "MLP 784-512-512-10, batch 8" in stdout
    assert data["unit"] == "ms" and data["reference"] == []
    (row,) = data["groups"].values()
    assert row.keys() == {"jaxnets", "flax.linen"} and all(v > 0 for v in row.values())


@pytest.mark.slow
def test_resnet18_rows_have_flax_in_both_layouts_and_torch_as_reference(tmp_path: Path) -> None:
    stdout, data = _run(tmp_path, "--only", "resnet18", "--resnet-batch", "2", "--resnet-sizes", "32",
                        "--resnet-steps", "1", "--resnet-rounds", "1")
    assert "ResNet-18, batch 2, 32x32" in stdout
    assert data["groups"]["ResNet-18, batch 2, 32x32"].keys() == {
        "jaxnets", "flax.linen", "flax.linen, NCHW data", "torch eager"}
    assert data["reference"] == ["torch eager"]
    spec = importlib.util.spec_from_file_location("bench_chart", BENCH / "chart.py")
    assert spec is not None and spec.loader is not None
    chart = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(chart)
    (result,) = chart.read_results(tmp_path)
    png = chart.draw([result], tmp_path / "b.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
