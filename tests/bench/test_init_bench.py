"""bench/init.py runs its cold processes and reports every contender (numbers are not asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "init.py"


@pytest.mark.slow
def test_init_bench_reports_jaxnets_cold_inits_of_resnet18():
    proc = subprocess.run([sys.executable, str(BENCH), "--rounds", "1", "--only", "jaxnets"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {line.split()[0] + " " + line.split()[1]: line.split()[2:] for line in
            proc.stdout.splitlines() if line.startswith("jaxnets ")}
    assert set(rows) == {"jaxnets eager", "jaxnets jit"}
    for init_s, import_s, params in rows.values():
        assert float(init_s) > 0 and float(import_s) > 0
        assert params == "11,689,512"  # torchvision's resnet18 parameter count


def test_torchvision_is_reported_as_skipped_when_it_does_not_import():
    proc = subprocess.run([sys.executable, str(BENCH), "--child", "torchvision"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    try:
        import torchvision  # noqa: F401
    except Exception:
        assert '"skipped"' in proc.stdout
    else:
        assert '"init_s"' in proc.stdout
