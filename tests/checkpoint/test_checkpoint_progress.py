"""Progress bars on checkpoint saves and restores (issue #12, item 6): counted in bytes, forced
on or off by ``progress=``, silent by default off a terminal, a bad value refused."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnets.checkpoint import CheckpointManager

MIB = 1 << 20
# 1.0625 MiB counted to its end, as tqdm writes it or as the text bar does (without tqdm).
_ALL_OF_IT = re.compile(r"1\.06M/1\.06M|1\.06/1\.06 MiB")


def _params() -> dict:
    # 1 MiB stored alone and 64 KiB of key data packed (a uint32 leaf): 1.0625 MiB of arrays.
    return {"w": jnp.ones((MIB // 4,), jnp.float32), "keys": jax.random.key_data(jax.random.split(jax.random.key(0), 8192))}


def _final_count(err: str, what: str) -> str:
    lines = [line for line in re.split(r"[\r\n]", err) if what in line]
    assert lines, err
    return lines[-1]


@pytest.mark.parametrize("async_save", [False, True])
def test_a_forced_bar_counts_the_bytes_of_a_save_to_its_end(tmp_path, capsys, async_save: bool) -> None:
    with CheckpointManager(tmp_path, async_save=async_save) as mgr:
        mgr.save(1, params=_params(), progress=True)
        mgr.wait()
    last = _final_count(capsys.readouterr().err, f"saving {tmp_path}/1")
    assert "100%" in last and _ALL_OF_IT.search(last), last


def test_a_forced_bar_counts_the_bytes_of_a_restore_to_its_end(tmp_path, capsys) -> None:
    params = _params()
    with CheckpointManager(tmp_path) as mgr:
        mgr.save(1, params=params)
        assert capsys.readouterr().err == ""  # auto: 1 MiB, and not a terminal
        got = mgr.restore(progress=True)
    last = _final_count(capsys.readouterr().err, f"restoring {tmp_path}/1")
    assert "100%" in last and _ALL_OF_IT.search(last), last
    np.testing.assert_array_equal(np.asarray(got.params["w"]), np.asarray(params["w"]))


def test_off_and_auto_draw_nothing(tmp_path, capsys) -> None:
    with CheckpointManager(tmp_path) as mgr:
        mgr.save(1, params=_params(), progress=False)
        mgr.save(2, params=_params())
        mgr.restore(1, progress=False)
        mgr.restore(2)
    assert capsys.readouterr().err == ""


def test_a_progress_that_is_not_a_bool_is_refused_before_anything_is_written(tmp_path) -> None:
    with CheckpointManager(tmp_path) as mgr:
        with pytest.raises(TypeError, match="progress= takes None"):
            mgr.save(1, params=_params(), progress="yes")  # type: ignore[arg-type]
        assert mgr.all_steps() == []
        mgr.save(1, params=_params())
        with pytest.raises(TypeError, match="progress= takes None"):
            mgr.restore(progress=1)  # type: ignore[arg-type]
