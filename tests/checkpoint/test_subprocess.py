"""Checkpoints across processes: bit-exact resume, resharding, SIGKILL mid-save, lost saves."""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxnets.checkpoint import CheckpointManager

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _training  # noqa: E402  (the run both processes do)

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_script.py")


def _run(*args: str, devices: int = 1, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    proc = subprocess.run(
        [sys.executable, SCRIPT, *args], env=env, capture_output=True, text=True, timeout=120
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def _bits(tree):
    leaves = jax.tree.leaves(tree)
    return [
        np.asarray(
            jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x
        )
        for x in leaves
    ]


@pytest.mark.slow
def test_resume_in_a_new_process_is_bit_exact(tmp_path):
    _run("first", str(tmp_path))
    _run("resume", str(tmp_path))
    # The uninterrupted run saved its step 10 from memory in the first process.
    straight = CheckpointManager(tmp_path / "straight").restore(10)
    resumed = CheckpointManager(tmp_path / "run").restore(10)
    fresh = _training.start()
    for name in ("params", "state", "opt_state", "rng"):
        got, want = getattr(resumed, name), getattr(straight, name)
        assert jax.tree.structure(got) == jax.tree.structure(fresh[name]), name
        assert jax.tree.structure(got) == jax.tree.structure(want), name
        for g, w in zip(_bits(got), _bits(want)):
            assert g.dtype == w.dtype and g.shape == w.shape
            assert g.tobytes() == w.tobytes(), name
    # The run really trained: BatchNorm statistics moved, adam counted 10 steps.
    assert int(resumed.opt_state[0].count) == 10
    assert not np.allclose(np.asarray(resumed.state["1"]["running_mean"]), 0.0)


@pytest.mark.slow
@pytest.mark.parametrize("group_below", [0, 1 << 20], ids=["orbax-arrays", "packed"])
def test_saved_on_8_devices_restores_on_1_and_on_2(tmp_path, group_below):
    _run("shard8", str(tmp_path), str(group_below), devices=8)
    c = CheckpointManager(tmp_path).restore(device="cpu")
    np.testing.assert_array_equal(np.asarray(c.params["w"]), np.arange(64 * 32).reshape(64, 32))
    np.testing.assert_array_equal(np.asarray(c.params["v"]), np.arange(16 * 8).reshape(16, 8))
    assert c.params["v"].dtype == np.int32
    assert c.params["w"].sharding == jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
    proc = _run("shard2", str(tmp_path), devices=2)
    assert "SHARD2 OK" in proc.stdout


def _readline(p: subprocess.Popen[str], timeout: float) -> str:
    """The child's next stdout line, or an AssertionError after ``timeout`` seconds."""
    assert p.stdout is not None
    ready, _, _ = select.select([p.stdout], [], [], timeout)
    if not ready:
        p.kill()
        raise AssertionError(f"no output from the child in {timeout} s")
    return p.stdout.readline()


@pytest.mark.slow
def test_sigkill_mid_save_leaves_the_last_complete_step_intact(tmp_path):
    rnd = random.Random(0)
    for _ in range(3):
        env = dict(os.environ, JAX_PLATFORMS="cpu")
        p = subprocess.Popen(
            [sys.executable, SCRIPT, "crash", str(tmp_path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            # READY comes once this process has a complete step on disk, so one always survives.
            assert _readline(p, 120).strip() == "READY"
            time.sleep(rnd.uniform(0.2, 1.0))
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=60)
        with CheckpointManager(tmp_path, max_to_keep=3) as mgr:
            steps = mgr.all_steps()
            assert steps, "no complete step survived"
            c = mgr.restore()
            assert c.step == steps[-1]
            fill = c.extra["fill"]
            assert fill == float(c.step)
            for leaf in jax.tree.leaves(c.params):
                assert np.all(np.asarray(leaf) == fill)
            assert len(jax.tree.leaves(c.params)) == 54
    leftovers = [n for n in os.listdir(tmp_path) if "tmp" in n]
    assert leftovers == [] or all(not os.path.isdir(tmp_path / n / "meta") for n in leftovers)


@pytest.mark.slow
def test_a_failed_background_save_that_was_raised_and_handled_ends_the_process_normally(tmp_path):
    proc = _run("fail-handled", str(tmp_path), check=False)
    assert "A: raised at wait:" in proc.stdout and "saving step 1 failed" in proc.stdout
    assert "B: raised at next save:" in proc.stdout
    assert "END" in proc.stdout
    # Delivered failures are the caller's: nothing more at exit, and the exit status is its own.
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "LOST" not in proc.stderr


@pytest.mark.slow
def test_a_failed_background_save_no_one_waited_for_is_reported_loudly_at_exit(tmp_path):
    proc = _run("fail-unwaited", str(tmp_path), check=False)
    assert "END" in proc.stdout
    # The program ended (and dropped its manager) before any call could raise the failure.
    assert "A CHECKPOINT WAS LOST" in proc.stderr
    assert f"{tmp_path / 'c'}: saving step 1 failed" in proc.stderr


@pytest.mark.slow
def test_a_save_in_flight_when_the_program_ends_is_completed(tmp_path):
    proc = _run("exit-without-wait", str(tmp_path))
    assert "SAVE RETURNED" in proc.stdout and "LOST" not in proc.stderr
    c = CheckpointManager(tmp_path).restore(1)
    assert c.extra == {"done": True}
    for i in range(8):
        np.testing.assert_array_equal(np.asarray(c.params[f"w{i}"]), np.full((1024, 1024), float(i)))
