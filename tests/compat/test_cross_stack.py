"""Files cross stacks: written on the newest stack (.venv), restored on the floor (.venv-min), and back.

A process with 8 CPU devices trains a CNN with BatchNorm and Adam, shards its weights and Adam's
moments over the devices, and writes a model file, a state_dict file of typed PRNG keys
(threefry and rbg) and a checkpoint of all of it; a process of the other stack with one device
loads them, and every leaf must be bit-for-bit what was written. Runs under `make test-min`
(after `make test` built .venv); skipped where either venv is absent.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from _tools import ROOT

SCRIPT = Path(__file__).with_name("_stack_script.py")
STACKS = {
    "new": Path(os.environ.get("JAXNETS_NEW_PYTHON", ROOT / ".venv" / "bin" / "python")),
    "min": Path(os.environ.get("JAXNETS_MIN_PYTHON", ROOT / ".venv-min" / "bin" / "python")),
}


def _python(stack: str) -> Path:
    python = STACKS[stack]
    if not python.exists():
        pytest.skip(f"{python} is absent: `make test` builds .venv and `make test-min` .venv-min "
                    "(or set JAXNETS_NEW_PYTHON / JAXNETS_MIN_PYTHON)")
    return python


def _run(stack: str, side: str, out: Path, devices: int) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "PYTHONPATH")}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT),  # this checkout, whatever is installed
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    r = subprocess.run([str(_python(stack)), str(SCRIPT), side, str(out)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{stack} {side} failed ({r.returncode}):\n{r.stdout}\n{r.stderr[-4000:]}"


@pytest.mark.slow
@pytest.mark.parametrize(("writer", "reader"), [("new", "min"), ("min", "new")])
def test_a_sharded_checkpoint_and_model_file_restore_bit_exactly_on_the_other_stack(
    tmp_path: Path, writer: str, reader: str
) -> None:
    _python(writer), _python(reader)  # skip before spending a subprocess
    _run(writer, "write", tmp_path, devices=8)
    _run(reader, "read", tmp_path, devices=1)
    info = {s: json.loads((tmp_path / f"{s}.json").read_text()) for s in ("write", "read")}
    assert info["write"]["versions"] != info["read"]["versions"], "both sides ran on one stack"
    assert info["write"]["devices"] == 8 and info["read"]["devices"] == 1
    assert info["read"]["keys"] == info["write"]["keys"]  # same key<impl> dtypes came back
    assert set(info["write"]["keys"].values()) == {"key<fry>", "key<rbg>"}
    with np.load(tmp_path / "write.npz") as w, np.load(tmp_path / "read.npz") as r:
        assert sorted(r.files) == sorted(w.files)
        assert any(n.startswith("ckpt.opt_state/") for n in w.files)
        assert any(n.endswith("running_var") for n in w.files)
        for name in w.files:
            if name == "y":  # computed by each stack's XLA: equal to rounding, not bitwise
                np.testing.assert_allclose(r[name], w[name], rtol=1e-5, atol=1e-5)
                continue
            assert (r[name].dtype, r[name].shape) == (w[name].dtype, w[name].shape), name
            assert r[name].tobytes() == w[name].tobytes(), name
