"""Every example runs as its header says, in a fresh process (``sys.executable``), and does what it claims."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
ENV = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")


def run_example(name: str, *args: str, cwd: Path, timeout: float = 240) -> str:
    r = subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=cwd, env=ENV,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{name} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def test_readme_quickstart_is_examples_quickstart_verbatim() -> None:
    code = (EXAMPLES / "quickstart.py").read_text()
    body = code.split("\n", 1)[1].strip()  # the file minus its "# Quickstart ... Run: ..." header line
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert any(b.strip() == body for b in blocks), "README's quickstart differs from examples/quickstart.py"


def test_quickstart_trains_saves_and_loads(tmp_path: Path) -> None:
    out = run_example("quickstart.py", cwd=tmp_path)
    m = re.search(r"loss ([\d.]+); accuracy of the loaded model: ([\d.]+)%", out)
    assert m, out
    assert float(m.group(1)) < 0.1 and float(m.group(2)) >= 95.0
    assert (tmp_path / "quickstart.jnet").stat().st_size > 0


def test_custom_layer_round_trips_and_unregistered_is_a_clear_error(tmp_path: Path) -> None:
    out = run_example("custom_layer.py", cwd=tmp_path)
    assert "'1.norm.weight'" in out and "'1.fc2.bias'" in out  # a composite's keys are its field names
    assert "1. saved and loaded custom_layer.jnet: same model, same outputs" in out
    assert "2. loading in a process without the classes (exit 3)" in out
    assert "RegistryError: custom_layer.jnet: the class 'examples.ResidualMLP' is not registered" in out
    assert "3. saving an unregistered layer: RegistryError: __main__.NotRegistered is not registered" in out
    assert not (tmp_path / "unregistered.jnet").exists()


def test_resume_training_stops_on_sigterm_and_resumes_from_the_saved_step(tmp_path: Path) -> None:
    args = ["--dir", "ckpt", "--steps", "100000", "--save-every", "25", "--step-delay", "0.005"]
    p = subprocess.Popen([sys.executable, str(EXAMPLES / "resume_training.py"), *args], cwd=tmp_path, env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + 120
    assert p.stdout is not None
    for line in p.stdout:  # wait until it is really training and has saved once
        lines.append(line)
        if line.startswith("step 50:") or time.monotonic() > deadline:
            break
    p.send_signal(signal.SIGTERM)
    rest, err = p.communicate(timeout=120)
    out = "".join(lines) + rest
    assert p.returncode == 0, out + err
    m = re.search(r"SIGTERM received: stopped at step (\d+); run again to resume", out)
    assert m, out + err
    stopped = int(m.group(1))
    assert 50 <= stopped < 100000
    assert f"step {stopped}: loss" in out and ", saved" in out

    # A new process resumes from exactly that step and finishes 10 more.
    args[3] = str(stopped + 10)
    out2 = run_example("resume_training.py", *args, cwd=tmp_path)
    assert f"resumed from step {stopped} " in out2, out2
    assert f"done: {stopped + 10} steps" in out2
    assert "training already complete" in run_example("resume_training.py", *args, cwd=tmp_path)


def test_torch_interop_outputs_agree_both_ways(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    out = run_example("torch_interop.py", cwd=tmp_path)
    assert "1. loaded 9 entries: 0.weight, 0.bias, 1.weight, 1.bias, 1.running_mean" in out
    errs = [float(x) for x in re.findall(r"max (?:\|jax - torch\| =|diff) ([\d.e+-]+)", out)]
    assert len(errs) == 2 and max(errs) < 1e-5, out
    assert "num_batches_tracked = 2" in out  # torch's buffer, after JAX's training step, went back
    assert "7 misshapen" in out and "5.weight: shape (10, 128) in the state_dict, (10, 256) in the model" in out


@pytest.mark.slow
def test_restore_anywhere_notebook_runs_top_to_bottom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    kernelspec = pytest.importorskip("ipykernel.kernelspec")
    # A kernel spec for this very interpreter (the venv's ipykernel), whatever else is installed.
    kernelspec.write_kernel_spec(str(tmp_path / "kernels" / "jaxnets-test"))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")  # the kernel inherits this process's environment
    nb = nbformat.read(EXAMPLES / "restore_anywhere.ipynb", as_version=4)
    # The install cell is for Colab: here jaxnets is installed, and tests never touch the network.
    install = [c for c in nb.cells if "install" in c.metadata.get("tags", [])]
    assert len(install) == 1 and "%pip install --quiet jaxnets" in install[0].source
    assert "jax==" not in install[0].source and "jax<" not in install[0].source  # Colab's jax stays
    nb.cells = [c for c in nb.cells if c not in install]
    client = nbclient.NotebookClient(nb, timeout=240, kernel_name="jaxnets-test",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    text = "\n".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "devices: 8; params['0']['weight'] (256, 16) was saved as 8 shards of (32, 16)" in text
    assert "now lives on [CpuDevice(id=0)]" in text
    assert "Adam step count restored: 100" in text
    assert "same outputs" in text


@pytest.mark.slow
def test_demo_stops_resumes_exactly_exports_and_predicts(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    out = run_example("demo.py", "--out", str(tmp_path / "demo_out"), "--epochs", "2", "--stop-after", "1",
                      cwd=tmp_path, timeout=300)
    assert "stopped after epoch 1: the process exits here" in out
    assert "resumed from" in out and "at epoch 1" in out
    assert "params bitwise equal: True; BatchNorm running stats bitwise equal: True" in out
    m = re.search(r"test accuracy: ([\d.]+)% on 360 images", out)
    assert m and float(m.group(1)) >= 90.0, out
    assert re.search(r"image 0: predicted \d, label \d", out)
    for name in ("digits.jnet", "curves.png", "history.json"):
        assert (tmp_path / "demo_out" / name).stat().st_size > 0, name
    assert (tmp_path / "demo_out" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
