"""Files whose typed keys were written by jax <= 0.4.30 (impl stored as 'fry') load everywhere.

jax 0.4.30's ``str(jax.random.key_impl(k))`` is ``'fry'``/``'rbg'``/``'urbg'`` (measured; see
docs/compatibility.md), and jaxnets 0.1 declared jax >= 0.4.30, so such files exist. Saving with
``key_impl`` patched to give those names writes exactly what that jax wrote.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

import jaxnets
from jaxnets.core.prng import IMPLS

WIRING = (
    "needs the lead's wiring: stored impl names through jaxnets.core.prng.canonical_impl in "
    "io/format.py (_parse_index's check against _PRNG_IMPLS), io/reader.py (_finish_leaf) and "
    "checkpoint/_layout.py (wrap_key_data and _key_size)"
)
_OLD_TAG = {"threefry2x32": "fry", "rbg": "rbg", "unsafe_rbg": "urbg"}


def _keys() -> dict[str, jax.Array]:
    return {f"k{i}": jax.random.key(7, impl=impl) for i, impl in enumerate(IMPLS)}


def _assert_same_keys(got, want) -> None:
    assert set(got) == set(want)
    for name, key in want.items():
        assert got[name].dtype == key.dtype, name
        np.testing.assert_array_equal(jax.random.key_data(got[name]), jax.random.key_data(key))


@pytest.fixture
def written_by_old_jax(monkeypatch):
    """Runs a save as jax 0.4.30 would have: key impls named by their short tags."""
    real = jax.random.key_impl

    def save(fn, *args, **kwargs):
        monkeypatch.setattr(jax.random, "key_impl", lambda k: _OLD_TAG[str(real(k))])
        try:
            return fn(*args, **kwargs)
        finally:
            monkeypatch.undo()

    return save


def test_the_patch_really_writes_the_old_names(tmp_path, written_by_old_jax):
    path = tmp_path / "old.jnet"
    written_by_old_jax(jaxnets.save_state_dict, path, {"rng": _keys()}, fsync=False)
    raw = path.read_bytes()
    assert b"fry" in raw and b"urbg" in raw and b"threefry2x32" not in raw


def test_a_model_file_with_old_impl_names_loads(tmp_path, written_by_old_jax):
    path = tmp_path / "old.jnet"
    written_by_old_jax(jaxnets.save_state_dict, path, {"rng": _keys()}, fsync=False)
    with jaxnets.open(path) as reader:
        got = {k.split(".", 1)[1]: reader[k] for k in reader}
    _assert_same_keys(got, _keys())


def test_a_checkpoint_with_old_impl_names_restores(tmp_path, written_by_old_jax):
    def save() -> None:
        with jaxnets.CheckpointManager(tmp_path / "ckpt") as mgr:
            mgr.save(1, params={"w": jax.numpy.arange(3.0)}, rng=_keys())

    written_by_old_jax(save)
    assert b'"fry"' in (tmp_path / "ckpt" / "1" / "meta" / "metadata").read_bytes()
    with jaxnets.CheckpointManager(tmp_path / "ckpt") as mgr:
        _assert_same_keys(mgr.restore(1).rng, _keys())
