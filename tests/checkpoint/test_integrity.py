"""A damaged checkpoint step never restores silently: every file, every kind of leaf.

Every file of a saved step directory is damaged in turn (seeded bit flips at many positions, and
truncations), and each restore must either raise a CheckpointError naming the step, or return
exactly the saved values, bit for bit (a flip in a byte no value depends on may pass).
"""

from __future__ import annotations

import random
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnets
from jaxnets.checkpoint import CheckpointManager
from jaxnets.errors import CheckpointError
from jaxnets.nn import Linear, Sequential

FLIPS_PER_FILE = 24
# orbax logs, and asyncio reports, the read errors a damaged file causes: expected here.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _record() -> dict:
    """Every kind of leaf, packed and stored alone (group_below=256 bytes below)."""
    return {
        "params": {
            "small": jnp.arange(12.0, dtype=jnp.float32).reshape(3, 4),  # packed float32
            "bias": jnp.linspace(-1.0, 1.0, 5, dtype=jnp.float32),  # packed float32
            "ints": jnp.arange(7, dtype=jnp.int32) - 3,  # packed int32
            "half": jnp.arange(6, dtype=jnp.bfloat16),  # packed bfloat16
            "big": jnp.arange(300.0, dtype=jnp.float32) / 7,  # 1200 bytes: alone
            # Incompressible, so that orbax stores it in a data file of its own (small values
            # live inside its index).
            "noise": jnp.asarray(np.random.default_rng(0).standard_normal(4096), jnp.float32),
        },
        "state": {
            "np_small": np.array([1, 2, 3], np.int64),  # packed int64 numpy
            "np_big": np.arange(100, dtype=np.float64) / 3,  # alone, numpy
            "count": np.int32(5),  # numpy scalar
            "epoch": 3,  # Python scalars
            "lr": 0.25,
            "name": "run",
        },
        "rng": {"key": jax.random.key(1), "keys": jax.random.split(jax.random.key(2), 40)},
    }


def _bits(x):
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return ("key", str(x.dtype), np.asarray(jax.random.key_data(x)).tobytes())
    if isinstance(x, (jax.Array, np.ndarray, np.generic)):
        a = np.asarray(x)
        return (type(x).__name__, a.dtype.str, a.shape, a.tobytes())
    return (type(x).__name__, x)


def _assert_exact(ckpt, record, model) -> None:
    for field, tree in record.items():
        got, want = jaxnets.flatten(getattr(ckpt, field)), jaxnets.flatten(tree)
        assert list(got) == list(want), field
        for k in want:
            assert _bits(got[k]) == _bits(want[k]), f"{field}.{k} changed silently"
    assert ckpt.model == model and ckpt.metrics == {"loss": 0.5} and ckpt.extra == {"pos": [1, 2]}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    model = Sequential(Linear(3, 4))
    with CheckpointManager(root, group_below=256, async_save=False) as mgr:
        mgr.save(7, **_record(), model=model, metrics={"loss": 0.5}, extra={"pos": [1, 2]})
    files = sorted(p for p in (root / "7").rglob("*") if p.is_file())
    return root, model, files


def _restore_or_raise(root: Path, record, model, verify: bool = True) -> str:
    """Restores step 7: 'raised' (a CheckpointError naming the step) or 'exact'."""
    try:
        ckpt = CheckpointManager(root).restore(7, verify=verify)
    except CheckpointError as e:
        assert "step 7" in str(e), f"the error does not name the step: {e}"
        return "checksum" if "do not match their checksums" in str(e) else "raised"
    _assert_exact(ckpt, record, model)
    return "exact"


def test_the_step_has_every_kind_of_file(saved):
    root, _, files = saved
    names = {str(p.relative_to(root / "7")) for p in files}
    assert "meta/metadata" in names
    assert any(n.startswith("arrays/") and "/d/" in n for n in names), names  # array data
    assert len(files) >= 6


def test_a_flipped_bit_in_any_file_raises_or_changes_nothing(saved):
    root, model, files = saved
    record = _record()
    rnd = random.Random(0)
    outcome: dict[str, set[str]] = {}
    for path in files:
        original = path.read_bytes()
        rel = str(path.relative_to(root / "7"))
        positions = sorted(rnd.sample(range(len(original)), min(FLIPS_PER_FILE, len(original))))
        for pos in positions:
            bit = rnd.randrange(8)
            damaged = bytearray(original)
            damaged[pos] ^= 1 << bit
            path.write_bytes(bytes(damaged))
            try:
                outcome.setdefault(rel, set()).add(_restore_or_raise(root, record, model))
            finally:
                path.write_bytes(original)
    # The checks are real: damage to the metadata is caught, and so are values that orbax
    # returned changed (compressed data decoded wrongly): by the checksums.
    assert outcome["meta/metadata"] - {"exact"}, outcome
    assert any("checksum" in o for r, o in outcome.items() if "/d/" in r), outcome
    assert _restore_or_raise(root, record, model) == "exact"  # everything put back


@pytest.mark.parametrize("keep", [0.0, 0.5, "all but one"])
def test_a_truncated_file_raises_or_changes_nothing(saved, keep):
    root, model, files = saved
    record = _record()
    for path in files:
        original = path.read_bytes()
        n = len(original) - 1 if keep == "all but one" else int(len(original) * keep)
        path.write_bytes(original[:n])
        try:
            _restore_or_raise(root, record, model)
        finally:
            path.write_bytes(original)


def test_a_flipped_bit_in_the_array_data_is_named_by_key(tmp_path):
    with CheckpointManager(tmp_path, group_below=0, async_save=False) as mgr:
        mgr.save(3, params={"w": jnp.arange(64.0)})
    # orbax compresses: flipping a bit of the data file may break decompression (the read
    # fails) or change values (the checksum fails); either way the step is named, and a
    # changed value names its key.
    data = [p for p in (tmp_path / "3" / "arrays").rglob("*") if p.is_file() and "/d/" in str(p)]
    seen = set()
    for path in data:
        original = path.read_bytes()
        for pos in range(0, len(original), max(1, len(original) // 24)):
            damaged = bytearray(original)
            damaged[pos] ^= 0x10
            path.write_bytes(bytes(damaged))
            try:
                CheckpointManager(tmp_path).restore(3)
                seen.add("exact")
            except CheckpointError as e:
                assert "step 3" in str(e)
                seen.add("checksum" if "params.w" in str(e) and "checksum" in str(e) else "read")
            finally:
                path.write_bytes(original)
    assert seen & {"checksum", "read"}


def test_verify_false_skips_the_checksums_but_not_the_structure(saved, tmp_path):
    root, model, _ = saved
    record = _record()
    assert _restore_or_raise(root, record, model, verify=False) == "exact"
