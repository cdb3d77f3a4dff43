"""bench/first_prediction.py: fresh processes, the same logits as torch, a results file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "first_prediction.py"


@pytest.mark.slow
def test_one_round_reports_every_contender_with_its_breakdown(tmp_path: Path) -> None:
    out = tmp_path / "first_prediction.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--rounds", "1", "--timeout", "300",
                           "--json", str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "logits agree with torch's" in proc.stdout
    for name in ("jaxnets", "jaxnets eager apply", "jaxnets + compilation cache", "torch"):
        assert any(line.startswith(name + " ") for line in proc.stdout.splitlines()), name
    data = json.loads(out.read_text())
    assert list(data["groups"]) == ["total", "import", "load", "predict"]
    for part, row in data["groups"].items():
        assert row.keys() == {"jaxnets", "jaxnets eager apply", "jaxnets + compilation cache", "torch"}
        assert all(v > 0 for v in row.values()), part
    total = data["groups"]["total"]["jaxnets"]
    parts = sum(data["groups"][p]["jaxnets"] for p in ("import", "load", "predict"))
    assert parts == pytest.approx(total, rel=1e-6)  # one process's parts add up (1 round: medians of one)
    assert data["reference"] == ["jaxnets eager apply", "jaxnets + compilation cache"]


def test_a_child_that_predicts_other_logits_fails_the_benchmark() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_first_prediction", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    runs = {"torch": [{"logits": [1.0, 2.0]}], "jaxnets predict": [{"logits": [1.0, 2.5]}]}
    with pytest.raises(RuntimeError, match="jaxnets predict predicts other logits than torch"):
        mod._check_same(runs)
    runs["jaxnets predict"] = [{"logits": [1.0, 2.0 + 1e-6]}]
    assert mod._check_same(runs) == pytest.approx(1e-6)
