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
from typing import Any

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
    "opt_state.bigkeys": np.asarray(jax.random.key_data(jax.random.split(jax.random.key(8), 256))),
    "opt_state.empty": np.zeros((0, 4), np.float32),
}

def check(flat, pid=None, *, rng=True):
    '''Every restored leaf against EXPECTED: each shard this process holds, bit for bit.'''
    for k, want in EXPECTED.items():
        x = flat[k]
        if k.endswith("keys"):
            assert jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key), k
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
    "bigkeys": jax.random.wrap_key_data(glob("opt_state.bigkeys", rows)), "empty": glob("opt_state.empty", rows),
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
    assert len(leaves["opt_state.bigkeys"]["shards"]) == 4 and len(leaves["opt_state.empty"]["pieces"]) == 1
    assert names == {
        "__group__.int64", "__group__.int32", "__pgroup__.float32", "__pgroup__.uint32",
        "opt_state.mu", "opt_state.bigrep", "opt_state.bigkeys",
    }  # fmt: skip


SINGLE = TREE + """
import sys
from jaxnets.core.tree import flatten
mesh = Mesh(np.array(jax.devices()), ("x",))
placement = {} if len(jax.devices()) == 1 else {"sharding": lambda k, i: NamedSharding(mesh, P("x")) if i.shape and i.shape[0] % 8 == 0 else None}
# Everything but the per-process values, which only a job of 2 processes gets back.
template = {
    "params": {"weight": EXPECTED["params.weight"], "bias": EXPECTED["params.bias"]},
    "opt_state": {k.split(".", 1)[1]: v for k, v in EXPECTED.items() if k.startswith("opt_state.")}
    | {"keys": jax.random.wrap_key_data(EXPECTED["opt_state.keys"]),
       "bigkeys": jax.random.wrap_key_data(EXPECTED["opt_state.bigkeys"]), "n": 3},
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


# Each case opens its own managers (in the same order on both processes), so that one case's
# failure leaves the next in step; every outcome is printed, and the test reads both outputs.
MISMATCHES = """
import time, numpy as np, jax.numpy as jnp
import jaxnets
from jaxnets.errors import CheckpointError
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
mesh = Mesh(np.array(jax.devices()), ("x",))
rows, cols, rep = NamedSharding(mesh, P("x")), NamedSharding(mesh, P(None, "x")), NamedSharding(mesh, P())
w = jax.make_array_from_callback((8, 8), rows, lambda i: np.arange(64.0, dtype=np.float32).reshape(8, 8)[i])
import json
n, results = [0], {}
def case(name, fn):
    n[0] += 1
    t = time.monotonic()
    try:
        mgr = jaxnets.CheckpointManager(os.path.join(OUT, str(n[0])), async_save=False, group_below=0, sync_timeout=5)
        mgr.save(0, params={"w": w})
        t = time.monotonic()
        fn(mgr)
        results[name] = f"no error {time.monotonic() - t:.1f}s"
    except Exception as e:
        msg = str(e).replace(chr(10), " | ")
        results[name] = f"{type(e).__name__} {time.monotonic() - t:.1f}s: {msg}"

case("step", lambda m: m.save(1 + PID, params={"w": w}))
# The silent loss of issue 12: process-local values that differ (a numpy array, a key folded
# with the process index, a jax array on this process's device), saved without per_process=.
local = {"b": np.full(3, PID), "k": jax.random.fold_in(jax.random.key(0), PID), "c": jnp.full(2, PID)}
case("values", lambda m: m.save(1, params={"w": w, **local, "same": np.arange(3)}))
case("per_process", lambda m: m.save(1, params={"w": w, **local}, per_process=("params.b", "params.k", "params.c")))
case("metrics", lambda m: m.save(1, params={"w": w}, metrics={"loss": float(PID)}))
case("structure", lambda m: m.save(1, params={"w": w, **({"extra": np.zeros(2)} if PID else {})}))
case("placement", lambda m: m.restore(0, sharding=rows if PID == 0 else rep))
case("local failure", lambda m: m.restore(0, like={"params": {"w": w, **({"v": w} if PID else {})}}))
case("uncovered", lambda m: m.restore(0, sharding=cols).params["w"].block_until_ready())
case("absent", lambda m: m.restore(0) if PID == 0 else None)
json.dump(results, open(os.path.join(OUT, f"results{PID}.json"), "w"))
"""


@pytest.fixture(scope="module")
def mismatches(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, str]]:
    out = tmp_path_factory.mktemp("mismatch")
    run_job(MISMATCHES, out)
    return [json.loads((out / f"results{p}.json").read_text()) for p in range(2)]


@pytest.mark.parametrize(
    ("case", "both"),
    [
        ("step", r"CheckpointError .*disagree.*step: process 0: 1, process 1: 2"),
        ("values", r"CheckpointError .*values: differs at params\.b, params\.c, params\.k \|.*per_process="),
        ("per_process", r"no error"),
        ("metrics", r"CheckpointError .*metadata: differs at metrics.*averaged over the processes"),
        ("structure", r"CheckpointError .*layout: differs at params\.extra"),
        ("placement", r"CheckpointError .*placement: differs at params\.w.*must be the same on each"),
    ],
)
def test_a_disagreement_raises_on_every_process_at_once(mismatches, case, both):
    for out in mismatches:
        assert re.match(both, out[case]), out[case]
        assert float(re.search(r" (\d+\.\d)s", out[case]).group(1)) < 5  # not the timeout


def test_a_failure_on_one_process_is_raised_on_the_others(mismatches):
    assert re.match(r"StateDictError .*params\.v", mismatches[1]["local failure"])
    assert re.match(r"CheckpointError .*restore failed on process 1: StateDictError", mismatches[0]["local failure"])


def test_a_process_that_does_not_call_makes_the_others_raise_at_the_timeout(mismatches):
    out = mismatches[0]["absent"]
    assert re.match(r"CheckpointError (\d+\.\d)s: .*process 1 did not take part within 5 s \(sync_timeout=\)", out), out
    assert 5 <= float(re.search(r" (\d+\.\d)s", out).group(1)) < 15
    assert mismatches[1]["absent"].startswith("no error")


def test_blocks_no_process_holds_whole_are_checked_by_reading_them_again(mismatches):
    for out in mismatches:
        assert out["uncovered"].startswith("no error"), out["uncovered"]


FLIPS = """
import shutil
import numpy as np, jax, jax.numpy as jnp
import jaxnets
from jaxnets.errors import CheckpointError
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
mesh = Mesh(np.array(jax.devices()), ("x",))
rows, cols, rep = NamedSharding(mesh, P("x")), NamedSharding(mesh, P(None, "x")), NamedSharding(mesh, P())
want = {k: (np.random.default_rng(i).standard_normal(s) * 100).astype(np.float32)
        for i, (k, s) in enumerate({"big": (64, 16), "small": (8, 4), "rep": (32, 16)}.items())}
def glob(k, s):
    return jax.make_array_from_callback(want[k].shape, s, lambda i: want[k][i])
params = {"big": glob("big", rows), "small": glob("small", rows), "rep": glob("rep", rep), "np": np.arange(5)}
rng = jax.random.fold_in(jax.random.key(0), PID)
src = os.path.join(OUT, "ck")
m = jaxnets.CheckpointManager(src, async_save=False, group_below=1024)
m.save(1, params=params, rng=rng, per_process="rng")
# Steps that differ from step 1 in one leaf each: their arrays under step 1's metadata decode
# fine, so only the checksums can tell (each kind of stored block in turn).
changed = {"big": 2, "small": 3, "rep": 4, "np": 5, "rng": 6}
for leaf, s in changed.items():
    p = dict(params)
    if leaf in want:
        other = want[leaf] + 1
        p[leaf] = jax.make_array_from_callback(other.shape, params[leaf].sharding, lambda i: other[i])
    elif leaf == "np":
        p["np"] = np.arange(5) + 1
    m.save(s, params=p, rng=jax.random.fold_in(rng, 1) if leaf == "rng" else rng, per_process="rng")
m.close()
step = os.path.join(src, "1")
files = sorted(os.path.relpath(os.path.join(d, f), step) for d, _, fs in os.walk(step) for f in fs)
if PID == 0:
    for leaf, s in changed.items():
        shutil.copytree(src, os.path.join(OUT, f"swap{leaf}"))
        shutil.rmtree(os.path.join(OUT, f"swap{leaf}", "1", "arrays"))
        shutil.copytree(os.path.join(src, str(s), "arrays"), os.path.join(OUT, f"swap{leaf}", "1", "arrays"))
    for i, f in enumerate(files):
        shutil.copytree(src, os.path.join(OUT, f"flip{i}"))
        path = os.path.join(OUT, f"flip{i}", "1", f)
        data = bytearray(open(path, "rb").read())
        if data:
            data[len(data) // 2] ^= 0x10
        open(path, "wb").write(bytes(data))
multihost_utils.sync_global_devices("flipped")
def same(x, k):
    if not isinstance(x, jax.Array):
        return np.array_equal(x, want[k]) if k in want else np.array_equal(x, np.arange(5))
    return all(np.asarray(s.data).tobytes() == want[k][s.index].tobytes() for s in x.addressable_shards)
import json
results = {}
placements = {
    "local": {},
    "rows": {"sharding": lambda k, info: rows if info.shape and info.shape[0] % 4 == 0 else None},
    "cols": {"sharding": lambda k, info: cols if len(info.shape) == 2 and info.shape[1] % 4 == 0 else None},
}
def outcome(d):
    try:
        c = jaxnets.CheckpointManager(d, sync_timeout=30).restore(1, **kw)
        ok = all(same(c.params[k], k) for k in params)
        ok = ok and np.array_equal(jax.random.key_data(c.rng), jax.random.key_data(rng))
        return "same" if ok else "WRONG"
    except CheckpointError as e:
        return "caught: " + str(e).split("checksums: ")[-1][:120]
for how, kw in placements.items():
    for i, f in enumerate(files):
        results[f"{f} {how}"] = outcome(os.path.join(OUT, f"flip{i}"))
    for leaf in changed:
        results[f"swapped {leaf} {how}"] = outcome(os.path.join(OUT, f"swap{leaf}"))
json.dump(results, open(os.path.join(OUT, f"flips{PID}.json"), "w"))
"""


def test_a_flipped_bit_in_any_file_of_a_two_process_step_never_restores_silently(tmp_path):
    run_job(FLIPS, tmp_path)
    results = [json.loads((tmp_path / f"flips{p}.json").read_text()) for p in range(2)]
    for out in results:
        wrong = [f for f, r in out.items() if r == "WRONG"]
        assert not wrong, wrong
        assert len({k.split()[0] for k in out}) >= 10 + 5
    # Every process raises, or none: the outcome is agreed on (each names what it found).
    assert {k: v.split(":")[0] for k, v in results[0].items()} == {k: v.split(":")[0] for k, v in results[1].items()}
    data = [f for f in results[0] if f.startswith("arrays/d/")]  # the step's array data
    assert data and all(results[0][f].startswith("caught") for f in data), results[0]
    assert any(f.startswith("meta") and r.startswith("caught") for f, r in results[0].items())
    # Arrays that decode fine but differ: caught by the checksums, under every placement (blocks
    # held whole, per-process rows, shared groups, and blocks read again in their saved layout).
    for how in ("local", "rows", "cols"):
        assert "params.big" in results[0][f"swapped big {how}"]
        assert "per-process packed group float32" in results[0][f"swapped small {how}"]
        assert "params.rep[0:32, 0:16]" in results[0][f"swapped rep {how}"]
        assert "packed group int64" in results[0][f"swapped np {how}"]
        assert "per-process packed group uint32" in results[0][f"swapped rng {how}"]
    assert "(read again)" in results[0]["swapped rep rows"] and "(read again)" not in results[0]["swapped rep local"]


def _edit(path: tuple[Any, ...], fn: Any) -> Any:
    def apply(meta: dict[str, Any]) -> None:
        node = meta
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = fn(node[path[-1]])

    return apply


# Lies in a 2-process step's meta, with the checksum recomputed (an edit, or a writer's bug): the
# structural checks must catch them before any array is sliced. (name: edit, words in the error)
LIES = {
    "piece offset +1": (_edit(("leaves", "params.weight", "pieces", 1, 1), lambda o: o + 1), ["params.weight", "offset"]),
    "piece of another process": (_edit(("leaves", "params.weight", "pieces", 0, 0), lambda p: 1), ["params.weight", "offset"]),
    "overlapping pieces": (_edit(("leaves", "params.weight", "pieces", 1, 2), lambda i: [[1, 4], [0, 4]]), ["params.weight", "tile"]),
    "a piece missing": (_edit(("leaves", "params.weight", "pieces"), lambda ps: ps[:-1]), ["params.weight", "tile"]),
    "piece out of bounds": (_edit(("leaves", "params.weight", "pieces", 3, 2), lambda i: [[6, 9], [0, 4]]), ["params.weight", "out of bounds"]),
    "per-process offset +1": (_edit(("leaves", "rng.noise", "offsets", 1), lambda o: o + 1), ["rng.noise", "offsets"]),
    "per-process offsets of 3 processes": (_edit(("leaves", "rng.noise", "offsets"), lambda o: o + [0]), ["rng.noise"]),
    "row length +1": (_edit(("pgroups", "float32", "length"), lambda n: n + 1), ["float32", "adds up"]),
    "a row checksum missing": (_edit(("pgroups", "float32", "rows"), lambda r: r[:1]), ["float32", "row checksums"]),
    "3 processes": (_edit(("processes",), lambda n: 3), ["row checksums"]),
    "per-process group removed": (lambda m: m["pgroups"].pop("uint32"), ["not stored"]),
    "shards twice": (_edit(("leaves", "opt_state.mu", "shards", 1, 0), lambda i: [[0, 16], [0, 16]]), ["opt_state.mu", "twice"]),
    "shard checksum malformed": (_edit(("leaves", "opt_state.mu", "shards", 0, 1), lambda h: "zz"), ["opt_state.mu", "checksum"]),
    "shards of a smaller array": (_edit(("leaves", "opt_state.mu", "shape"), lambda s: [48, 16]), ["opt_state.mu"]),
    "format 2 with rows": (_edit(("version",), lambda v: 2), ["multi-process fields"]),
}


@pytest.mark.parametrize("lie", sorted(LIES))
def test_a_lying_multi_process_meta_is_refused_before_anything_is_read(saved, lie):
    import copy

    from jaxnets.checkpoint.meta import check_meta, read_meta, seal
    from jaxnets.errors import CheckpointError

    step_dir = str(saved / "sync" / "1")
    meta = copy.deepcopy(read_meta(step_dir))
    edit, words = LIES[lie]
    edit(meta)
    for verify in (True, False):
        with pytest.raises(CheckpointError, match=r"\(step 1\)") as e:
            check_meta(seal(meta), step_dir=step_dir, verify=verify)
        for w in words:
            assert w in str(e.value), f"{lie}: {w!r} not in {e.value}"


def test_every_single_bit_flip_of_a_multi_process_meta_is_caught_or_harmless(saved):
    import random

    from jaxnets.checkpoint.meta import check_meta, read_meta
    from jaxnets.errors import CheckpointError

    step_dir = str(saved / "sync" / "1")
    meta = read_meta(step_dir)
    text = json.dumps(meta).encode()
    rnd = random.Random(2)
    for pos in range(0, len(text), 3):  # every third byte, one seeded bit each
        damaged = bytearray(text)
        damaged[pos] ^= 1 << rnd.randrange(8)
        try:
            parsed = json.loads(bytes(damaged))
        except ValueError:
            continue  # read_meta turns this into a CheckpointError
        try:
            check_meta(parsed, step_dir=step_dir)
        except CheckpointError:
            continue
        assert parsed == meta, f"byte {pos}: a changed meta passed the checks"


def test_a_single_process_step_restores_across_two_processes_each_reading_its_shards(tmp_path):
    # The other way round: a step saved by one process (format 2: one checksum per array) is
    # restored sharded over 2 processes; no process holds a whole array, so each array's
    # checksum is checked by one process reading it again.
    run_single(
        TREE
        + f"""
import shutil
mgr = jaxnets.CheckpointManager({str(tmp_path / "one")!r}, async_save=False, group_below=1024)
params = {{k.split(".", 1)[1]: jnp.asarray(v) for k, v in EXPECTED.items() if k.startswith("params.")}}
mgr.save(1, params=params, opt_state={{"mu": jnp.asarray(EXPECTED["opt_state.mu"]), "bigrep": jnp.asarray(EXPECTED["opt_state.bigrep"])}})
mgr.save(2, params=params, opt_state={{"mu": jnp.asarray(EXPECTED["opt_state.mu"]) + 1, "bigrep": jnp.asarray(EXPECTED["opt_state.bigrep"])}})
mgr.close()
# Step 2's arrays (they decode fine) under step 1's metadata: only the checksum can tell.
shutil.copytree({str(tmp_path / "one")!r}, {str(tmp_path / "swapped")!r})
shutil.rmtree({str(tmp_path / "swapped" / "1" / "arrays")!r})
shutil.copytree({str(tmp_path / "one" / "2" / "arrays")!r}, {str(tmp_path / "swapped" / "1" / "arrays")!r})
"""
    )
    outs = run_job(
        TREE
        + """
mesh = Mesh(np.array(jax.devices()), ("x",))
rows, cols = NamedSharding(mesh, P("x")), NamedSharding(mesh, P(None, "x"))
mgr = jaxnets.CheckpointManager(os.path.join(OUT, "one"))
for how, s in (("default", None), ("rows", rows), ("cols", cols)):
    fit = None if s is None else (lambda k, i, s=s: s if len(i.shape) == 2 and i.shape[s.spec.index("x")] % 4 == 0 else None)
    c = mgr.restore(1, sharding=fit)
    for k, x in {"params.weight": c.params["weight"], "opt_state.mu": c.opt_state["mu"], "opt_state.bigrep": c.opt_state["bigrep"]}.items():
        assert (s is None) == x.is_fully_addressable, (how, k)
        for sh in x.addressable_shards:
            assert np.asarray(sh.data).tobytes() == EXPECTED[k][sh.index].tobytes(), (how, k)
    print("RESTORED", how, flush=True)
    try:
        jaxnets.CheckpointManager(os.path.join(OUT, "swapped")).restore(1, sharding=fit)
        print("SWAPPED", how, "not caught", flush=True)
    except CheckpointError as e:
        print("SWAPPED", how, "caught", "opt_state.mu" in str(e), "(read again)" in str(e), flush=True)
""",
        tmp_path,
    )
    for out in outs:
        assert "RESTORED default" in out and "RESTORED rows" in out and "RESTORED cols" in out
        # Held whole by each process (default): checked there; split (rows, cols): read again.
        assert "SWAPPED default caught True False" in out
        assert "SWAPPED rows caught True True" in out and "SWAPPED cols caught True True" in out
