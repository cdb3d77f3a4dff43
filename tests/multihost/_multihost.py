"""Runs a script as a multi-process ``jax.distributed`` job on this machine, bounded in time.

Every process is a subprocess on 127.0.0.1 with its own virtual CPU devices and gloo CPU
collectives, as on a pod slice with one process per host. The job is killed as a whole if any
process fails or the time runs out, so a test can never hang; the error shows every process's
output.

A job's script starts after :data:`PREAMBLE`, which has initialised ``jax.distributed`` and
defined ``PID`` (this process's index), ``NPROC`` and ``OUT`` (a folder shared by the job).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

__all__ = ["PREAMBLE", "run_job", "run_single"]

PREAMBLE = """
import os, sys
PID, NPROC, PORT, OUT = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{PORT}", num_processes=NPROC,
                           process_id=PID, initialization_timeout=60)
"""

# A failing process would otherwise wait at exit in jax.distributed's shutdown barrier for the
# others: it leaves at once instead, so the launcher sees the failure now.
_RUNNER = """
import os, sys, traceback
try:
    exec(compile(open(sys.argv[5]).read(), "job.py", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
except SystemExit as e:
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    if code:
        sys.stdout.flush(); sys.stderr.flush(); os._exit(code)
except BaseException:
    traceback.print_exc(); sys.stdout.flush(); sys.stderr.flush(); os._exit(1)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(devices: int) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    root = str(Path(__file__).resolve().parents[2])  # this checkout, whatever is installed
    env["PYTHONPATH"] = root + os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else root
    return env


def run_job(
    script: str,
    out: str | os.PathLike[str],
    *,
    processes: int = 2,
    devices: int = 2,
    timeout: float = 150,
) -> list[str]:
    """Runs ``PREAMBLE + script`` in ``processes`` processes with ``devices`` CPU devices each.

    Returns:
      Each process's combined stdout and stderr, by process index.

    Raises:
      AssertionError: a process exited non-zero, or the job ran past ``timeout`` seconds (every
        process is killed then), with all outputs in the message.
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.py"
        path.write_text(_RUNNER)
        job = Path(tmp) / "job.py"
        job.write_text(PREAMBLE + textwrap.dedent(script))
        logs = [Path(tmp) / f"p{i}.log" for i in range(processes)]
        port = str(_free_port())
        procs = []
        for i in range(processes):
            with open(logs[i], "wb") as log:
                procs.append(subprocess.Popen(
                    [sys.executable, str(path), str(i), str(processes), port, os.fspath(out), str(job)],
                    stdout=log, stderr=subprocess.STDOUT, env=_env(devices),
                ))  # fmt: skip
        deadline = time.monotonic() + timeout
        failed = None
        while any(p.poll() is None for p in procs):
            if time.monotonic() > deadline:
                failed = f"timed out after {timeout} s"
                break
            bad = [i for i, p in enumerate(procs) if p.poll() not in (None, 0)]
            if bad:
                time.sleep(2)  # let the others report the same failure before they are killed
                failed = f"process {bad[0]} exited with status {procs[bad[0]].returncode}"
                break
            time.sleep(0.05)
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        texts = [log.read_text(errors="replace") for log in logs]
        if failed is None and any(p.returncode for p in procs):
            failed = "a process failed: " + ", ".join(str(p.returncode) for p in procs)
        if failed:
            shown = "\n".join(f"--- process {i} ---\n{t[-6000:]}" for i, t in enumerate(texts))
            raise AssertionError(f"multi-process job {failed}\n{shown}")
        return texts


def run_single(script: str, *, devices: int = 1, timeout: float = 120) -> str:
    """Runs ``script`` in one plain process with ``devices`` CPU devices; returns its output."""
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True, text=True, timeout=timeout, env=_env(devices),
    )  # fmt: skip
    if r.returncode:
        raise AssertionError(
            f"process failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-6000:]}"
        )
    return r.stdout
