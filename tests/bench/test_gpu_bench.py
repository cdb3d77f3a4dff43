"""bench/gpu.py: a no-op that says why without a GPU; its GPU code paths, run on the CPU backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "gpu.py"


def _run(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}  # no GPU, even on a machine that has one
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_without_a_gpu_it_exits_0_says_why_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    proc = _run("--json", str(out), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no GPU here, nothing measured and no results written" in proc.stdout
    assert "jax.devices('gpu') failed" in proc.stdout
    assert not out.exists()


@pytest.mark.slow
def test_the_gpu_code_paths_run_on_two_cpu_devices_and_report_every_case(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    proc = _run("--device", "cpu", "--scale", "0.005", "--repeat", "1", "--dir", str(tmp_path),
                "--json", str(out), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cpu x 2" in proc.stdout
    groups = json.loads(out.read_text())["groups"]
    assert {g.split(", ", 1)[0] for g in groups} == {
        "file save", "load", "ckpt save", "ckpt restore", "ckpt save() stall", "ckpt restore to CPU"
    }
    assert groups["file save, 16 leaves"].keys() == {"jaxnets", "D2H floor", "D2H + write floor"}
    assert groups["load, 2000 leaves"].keys() == {"jaxnets", "H2D floor", "read + H2D floor"}
    assert groups["ckpt save() stall, ResNet-18 + adam"].keys() == {"jaxnets", "orbax"}
    assert groups["ckpt restore to CPU, 16 leaves on 2 GPUs"].keys() == {"jaxnets", "orbax"}
    assert all(v > 0 for row in groups.values() for v in row.values())
    assert [p.name for p in tmp_path.iterdir()] == ["gpu.json"]  # its files are cleaned up
