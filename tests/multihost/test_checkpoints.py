"""CheckpointManager in a 2-process jax.distributed job (2 CPU devices each), and its steps read
back in single processes with 1 and 8 devices.

One job saves (sync and async) a tree of every kind of leaf a pod run has: arrays sharded over
both processes (large ones written by orbax, small ones packed per process), replicated arrays,
process-local values equal everywhere, per-process values (``save(per_process=...)``), and
restores it under every placement, bit-exactly; others check that every disagreement between
the processes raises on both within the timeout, and that a flipped bit in any file of a
multi-process step never restores silently. The expected values are rebuilt from seeds in each
process, so every comparison is against data no checkpoint code touched.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _multihost import run_job, run_single  # noqa: E402

pytestmark = pytest.mark.slow

# The tree, built the same way in every process (and in the single-process restores).
TREE = """
import numpy as np, jax, jax.numpy as jnp
import jaxnets
from jaxnets.errors import CheckpointError
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

def full(shape, seed, dtype=np.float32):
    return (np.random.default_rng(seed).standard_normal(shape) * 100).astype(dtype)

EXPECTED = {
    "params.weight": full((8, 4), 1), "params.bias": full((8,), 2),
    "opt_state.mu": full((64, 16), 3), "opt_state.col": full((4, 8), 4),
    "opt_state.grid": full((4, 4), 5), "opt_state.bigrep": full((32, 16), 6),
    "opt_state.np": np.arange(6), "opt_state.count": np.zeros((), np.int32),
    "opt_state.keys": np.asarray(jax.random.key_data(jax.random.split(jax.random.key(7), 4))),
}

def check(flat, pid=None, *, rng=True):
    '''Every restored leaf against EXPECTED: each shard this process holds, bit for bit.'''
    for k, want in EXPECTED.items():
        x = flat[k]
        if k.endswith("keys"):
            x = jax.random.key_data(x)
        if isinstance(x, jax.Array):
            for s in x.addressable_shards:
                got = np.asarray(s.data)
                assert got.tobytes() == want[s.index].tobytes(), (k, s.index)
        else:
            assert np.asarray(x).tobytes() == want.tobytes(), k
    assert flat["opt_state.n"] == 3 and type(flat["opt_state.n"]) is int
    if rng:
        key = jax.random.fold_in(jax.random.key(0), pid)
        assert np.array_equal(jax.random.key_data(flat["rng.key"]), jax.random.key_data(key))
        assert np.array_equal(flat["rng.noise"], np.full(3, pid, np.float32))
"""

# The job's tree: global arrays built from EXPECTED's values.
MAKE = """
mesh = Mesh(np.array(jax.devices()), ("x",))
grid = Mesh(np.array(jax.devices()).reshape(2, 2), ("p", "d"))
rows, cols, rep = NamedSharding(mesh, P("x")), NamedSharding(mesh, P(None, "x")), NamedSharding(mesh, P())
def glob(k, s):
    return jax.make_array_from_callback(EXPECTED[k].shape, s, lambda i: EXPECTED[k][i])
model = jaxnets.nn.Linear(4, 8)
params = {"weight": glob("params.weight", rows), "bias": glob("params.bias", rep)}
keys = jax.random.wrap_key_data(glob("opt_state.keys", rows))
opt_state = {
    "mu": glob("opt_state.mu", rows), "col": glob("opt_state.col", cols),
    "grid": glob("opt_state.grid", NamedSharding(grid, P("p", "d"))),
    "bigrep": glob("opt_state.bigrep", rep), "keys": keys,
    "np": np.arange(6), "count": jnp.zeros((), jnp.int32), "n": 3,
}
rng = {"key": jax.random.fold_in(jax.random.key(0), PID), "noise": np.full(3, PID, np.float32)}
record = dict(params=params, opt_state=opt_state, rng=rng, model=model, per_process=("rng",))
"""

SAVE_AND_RESTORE = TREE + MAKE + """
import json, time
from jaxnets.core.tree import flatten
opts = dict(group_below=1024, sync_timeout=60)
mgrs = {"sync": jaxnets.CheckpointManager(os.path.join(OUT, "sync"), async_save=False, **opts),
        "async": jaxnets.CheckpointManager(os.path.join(OUT, "async"), **opts)}
for name, mgr in mgrs.items():
    mgr.save(1, **record)
    mgr.wait()
def by_rows(k, info):
    return rows if info.shape and info.shape[0] % 4 == 0 else None
placements = {
    "default": {}, "device=cpu": {"device": "cpu"}, "sharding": {"sharding": by_rows},
    "like": {"like": {"params": params, "opt_state": opt_state}},
}
for name, mgr in mgrs.items():
    for how, kw in placements.items():
        c = mgr.restore(1, **kw)
        flat = flatten({"params": c.params, "opt_state": c.opt_state, "rng": c.rng})
        check(flat, PID)
        if how == "sharding":
            assert flat["opt_state.mu"].sharding == rows and not flat["opt_state.mu"].is_fully_addressable
        if how == "like":
            assert flat["opt_state.col"].sharding == cols and flat["opt_state.grid"].sharding.spec == P("p", "d")
        if how in ("default", "device=cpu"):
            assert all(x.is_fully_addressable for x in flat.values() if isinstance(x, jax.Array))
        print("RESTORED", name, how, flush=True)
mgrs["sync"].export(1, os.path.join(OUT, "model.jnet"))
loaded = jaxnets.load(os.path.join(OUT, "model.jnet"))
for k in ("weight", "bias"):
    assert np.asarray(loaded.params[k]).tobytes() == EXPECTED["params." + k].tobytes()
check(flatten({"opt_state": loaded.opt_state}) | {"opt_state.n": 3, **{k: EXPECTED[k] for k in EXPECTED if not k.startswith("opt_state")}}, rng=False)
print("EXPORTED", flush=True)
for mgr in mgrs.values():
    mgr.close()
"""


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two checkpoint directories written by a 2-process job (sync and async saves)."""
    out = tmp_path_factory.mktemp("two_processes")
    outs = run_job(SAVE_AND_RESTORE, out)
    for text in outs:
        for name in ("sync", "async"):
            for how in ("default", "device=cpu", "sharding", "like"):
                assert f"RESTORED {name} {how}" in text, text[-3000:]
        assert "EXPORTED" in text
    return out


def test_a_two_process_save_restores_bit_exactly_in_the_same_job_under_every_placement(saved):
    # (asserted in the fixture's job: default, device="cpu", a sharding function, like=, and
    # export(), for a sync and an async save)
    assert (saved / "model.jnet").is_file()


def test_small_global_arrays_are_packed_per_process_and_replicated_ones_stored_once(saved):
    from jaxnets.checkpoint.meta import read_meta

    meta = read_meta(saved / "sync" / "1")
    leaves = meta["leaves"]
    assert meta["version"] == 3 and meta["processes"] == 2
    # A row-sharded (8, 4) array over 4 devices: 4 pieces, 2 from each process's row.
    assert [p[0] for p in leaves["params.weight"]["pieces"]] == [0, 0, 1, 1]
    assert [p[2] for p in leaves["params.weight"]["pieces"]] == [[[0, 2], [0, 4]], [[2, 4], [0, 4]], [[4, 6], [0, 4]], [[6, 8], [0, 4]]]
    # Replicated: one piece, written by process 0 only.
    assert [p[0] for p in leaves["params.bias"]["pieces"]] == [0]
    assert len(leaves["opt_state.grid"]["pieces"]) == 4 and len(leaves["opt_state.col"]["pieces"]) == 4
    # Large arrays: written by orbax, a checksum per distinct block.
    assert len(leaves["opt_state.mu"]["shards"]) == 4 and len(leaves["opt_state.bigrep"]["shards"]) == 1
    # Process-local values equal everywhere: in the shared group; per-process ones in the rows.
    assert leaves["opt_state.np"]["group"] == "int64" and leaves["opt_state.count"]["group"] == "int32"
    assert len(leaves["rng.noise"]["offsets"]) == 2
    assert set(meta["pgroups"]) == {"float32", "uint32"}
    stored = json.loads((saved / "sync" / "1" / "arrays" / "_METADATA").read_text())
    names = {entry.split("'")[1] for entry in stored["tree_metadata"]}
    assert names == {"__group__.int64", "__group__.int32", "__pgroup__.float32", "__pgroup__.uint32", "opt_state.mu", "opt_state.bigrep"}


SINGLE = TREE + """
import sys
from jaxnets.core.tree import flatten
mesh = Mesh(np.array(jax.devices()), ("x",))
placement = {} if len(jax.devices()) == 1 else {"sharding": lambda k, i: NamedSharding(mesh, P("x")) if i.shape and i.shape[0] % 8 == 0 else None}
# Everything but the per-process values, which only a job of 2 processes gets back.
template = {
    "params": {"weight": EXPECTED["params.weight"], "bias": EXPECTED["params.bias"]},
    "opt_state": {k.split(".", 1)[1]: v for k, v in EXPECTED.items() if k.startswith("opt_state.")}
    | {"keys": jax.random.wrap_key_data(EXPECTED["opt_state.keys"]), "n": 3},
}
for name in ("sync", "async"):
    mgr = jaxnets.CheckpointManager(os.path.join(DIR, name))
    try:
        mgr.restore(1)
        raise AssertionError("per-process values restored in a job of another size")
    except CheckpointError as e:
        assert "saved per process by 2 processes" in str(e) and "rng.key" in str(e), e
    c = mgr.restore(1, like=template, partial=True, **placement)
    flat = flatten({"params": c.params, "opt_state": c.opt_state})
    check(flat, rng=False)
    if placement:
        assert len(flat["opt_state.mu"].sharding.device_set) == 8
    print("RESTORED", name, len(jax.devices()), flush=True)
"""


@pytest.mark.parametrize("devices", [1, 8])
def test_a_two_process_step_restores_bit_exactly_in_one_process(saved, devices):
    out = run_single(f"import os\nDIR = {str(saved)!r}\n" + SINGLE, devices=devices)
    assert f"RESTORED sync {devices}" in out and f"RESTORED async {devices}" in out
