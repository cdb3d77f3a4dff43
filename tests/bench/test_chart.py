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


def test_reference_libraries_are_stored_and_drawn_hatched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chart = _chart()
    groups = {"ResNet-18, batch 16": {"jaxnets": 450.0, "flax.linen": 330.0, "torch eager": 900.0}}
    chart.write_results("train_step", "Train step", groups, unit="ms", reference=["torch eager"],
                        directory=tmp_path)
    (result,) = chart.read_results(tmp_path)
    assert result["reference"] == ["torch eager"] and result["unit"] == "ms"
    from matplotlib.axes import Axes

    drawn = []
    real_bar = Axes.bar

    def bar(self, *args, **kwargs):  # records what each bar was drawn with
        drawn.append((kwargs["label"], kwargs.get("hatch")))
        return real_bar(self, *args, **kwargs)

    monkeypatch.setattr(Axes, "bar", bar)
    chart.draw([result], tmp_path / "b.png")
    assert drawn == [("jaxnets", None), ("flax.linen", None), ("torch eager (reference)", "//")]


def test_a_reference_library_no_group_has_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"reference libraries \['torch'\] are in no group"):
        _chart().write_results("x", "X", {"op": {"jaxnets": 1.0}}, reference=["torch"], directory=tmp_path)
    assert not (tmp_path / "x.json").exists()


def test_results_without_reference_read_as_none_and_a_bad_reference_is_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "old.json").write_text(json.dumps({"groups": {"save": {"jaxnets": 1.0}}}))
    (tmp_path / "bad.json").write_text(json.dumps({"groups": {"save": {"jaxnets": 1.0}}, "reference": "torch"}))
    assert [(r["name"], r["reference"]) for r in _chart().read_results(tmp_path)] == [("old", [])]
    assert "bad.json" in capsys.readouterr().err


def test_wide_panels_take_a_row_of_their_own_and_narrow_ones_pair_up() -> None:
    chart = _chart()
    n = chart.WIDE
    assert chart.layout([2, 3, 2]) == [(0, 0, 1), (0, 1, 1), (1, 0, 1)]
    assert chart.layout([2, n + 1, 3, 3, n + 5]) == [(0, 0, 1), (1, 0, 2), (0, 1, 1), (2, 0, 1), (3, 0, 2)]
    assert chart.layout([n]) == [(0, 0, 1)]


def test_panels_from_different_machines_name_their_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chart = _chart()
    chart.write_results("gpu", "GPU", {"load": {"jaxnets": 0.1, "H2D floor": 0.05}},
                        machine="NVIDIA H100 x 1", directory=tmp_path)
    chart.write_results("files", "Files", {"load": {"jaxnets": 0.2}}, directory=tmp_path)
    results = chart.read_results(tmp_path)
    assert results[1]["machine"] == "NVIDIA H100 x 1" and results[0]["machine"] != "NVIDIA H100 x 1"
    from matplotlib.axes import Axes

    titles = []
    real_title = Axes.set_title

    def set_title(self, label, *args, **kwargs):
        titles.append(label)
        return real_title(self, label, *args, **kwargs)

    monkeypatch.setattr(Axes, "set_title", set_title)
    chart.draw(results, tmp_path / "b.png")
    assert titles[1] == "GPU\n(NVIDIA H100 x 1)" and titles[0].startswith("Files\n(")
