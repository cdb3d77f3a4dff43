"""bench/chart.py: results JSON in, docs/benchmarks.png out."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("matplotlib")
CHART = Path(__file__).resolve().parents[2] / "bench" / "chart.py"


def _chart() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_chart", CHART)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_results_written_by_write_results_are_read_back_and_drawn(tmp_path: Path) -> None:
    chart = _chart()
    chart.write_results("files", "Model files: save and load", {"save": {"jaxnets": 0.2, "orbax": 0.5},
                        "load": {"jaxnets": 0.1, "orbax": 0.4}}, directory=tmp_path)
    chart.write_results("ckpt", "Checkpoints", {"save": {"jaxnets": 1.0, "flax+orbax": 3.0}}, directory=tmp_path)
    results = chart.read_results(tmp_path)
    assert [r["name"] for r in results] == ["ckpt", "files"]
    assert results[1]["groups"] == {"save": {"jaxnets": 0.2, "orbax": 0.5}, "load": {"jaxnets": 0.1, "orbax": 0.4}}
    png = tmp_path / "out" / "benchmarks.png"
    assert chart.main(["--results", str(tmp_path), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_malformed_results_are_skipped_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chart = _chart()
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "wrong.json").write_text(json.dumps({"groups": {"save": {"jaxnets": "fast"}}}))
    chart.write_results("ok", "OK", {"load": {"jaxnets": 1.0}}, directory=tmp_path)
    assert [r["name"] for r in chart.read_results(tmp_path)] == ["ok"]
    err = capsys.readouterr().err
    assert "skipping" in err and "broken.json" in err and "wrong.json" in err


def test_no_results_draws_nothing_and_succeeds(tmp_path: Path) -> None:
    png = tmp_path / "benchmarks.png"
    assert _chart().main(["--results", str(tmp_path / "none"), "--out", str(png)]) == 0
    assert not png.exists()
