"""The 2-process fixture itself: a real jax.distributed job, and failures that cannot hang."""

from __future__ import annotations

import os
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _multihost import run_job  # noqa: E402

pytestmark = pytest.mark.slow


def test_two_processes_see_four_global_devices_and_agree_on_a_sum(tmp_path):
    outs = run_job(
        """
        import numpy as np
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        mesh = Mesh(np.array(jax.devices()), ("x",))
        a = jax.make_array_from_callback((8,), NamedSharding(mesh, P("x")), lambda i: np.arange(8.0)[i])
        print("RESULT", jax.process_count(), len(jax.devices()), len(jax.local_devices()), float(jax.jit(lambda v: v.sum())(a)))
        """,
        tmp_path,
    )
    for out in outs:
        assert "RESULT 2 4 2 28.0" in out


def test_a_failing_process_ends_the_job_quickly_with_every_output(tmp_path):
    start = time.monotonic()
    with pytest.raises(
        AssertionError, match=r"process 1 exited with status 3(.|\n)*--- process 0 ---"
    ):
        run_job(
            """
            import time
            if PID == 1:
                print("giving up"); sys.exit(3)
            time.sleep(600)
            """,
            tmp_path,
        )
    assert time.monotonic() - start < 60


def test_a_hung_job_is_killed_at_its_timeout(tmp_path):
    with pytest.raises(AssertionError, match="timed out after 5 s"):
        run_job("import time; time.sleep(600)", tmp_path, timeout=5)
