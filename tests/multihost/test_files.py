"""Model files across processes: one file saved by a 2-process jax.distributed job (each process
writing its own shards), loaded shard by shard in the same job, and in single processes with 1
and 8 devices; the errors when one file cannot be written; peak memory (VmHWM) of both.

Every job is bounded (tests/multihost/_multihost.py); the whole file runs in about a minute.
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _multihost import run_job, run_single  # noqa: E402

pytestmark = pytest.mark.slow

# The same arrays in every process (and in the single-process checks), by key: (value, spec over
# the mesh axes ("a": the processes, "b": each process's 2 devices)).
BUILD = """
import numpy as np, jax, jax.numpy as jnp, ml_dtypes, jaxnets
from jaxnets import nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

def pattern(shape, dtype, salt):
    n = int(np.prod(shape))
    return ((np.arange(n, dtype=np.int64) * 7919 + salt) % 1000 - 500).astype(dtype).reshape(shape)

REF = {
    "rows": (pattern((64, 48), np.float32, 1), P(("a", "b"))),        # one run per block
    "cols": (pattern((40, 64), np.float32, 2), P(None, ("a", "b"))),  # 40 runs per block
    "grid": (pattern((32, 16), ml_dtypes.bfloat16, 3), P("a", "b")),
    "within": (pattern((12, 8), np.int32, 4), P(None, "b")),          # replicated over processes
    "rep": (pattern((7,), np.float32, 5), P()),
    "scalar": (pattern((), np.float32, 6), P()),
    "empty": (np.zeros((0, 4), np.float32), P()),
}
MODEL = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 8))
PARAMS = jax.tree.map(np.asarray, MODEL.init(jax.random.key(0))[0])
MODEL_SPECS = {"0.weight": P(("a", "b")), "0.bias": P("a"), "2.weight": P(None, "b"), "2.bias": P()}

def mesh_of(devices):
    n = len(devices)
    return Mesh(np.array(devices).reshape(2, n // 2) if n > 1 else np.array(devices).reshape(1, 1), ("a", "b"))

def sharding_fn(mesh, specs):
    return lambda key, info: NamedSharding(mesh, specs.get(key, P()))

def check(loaded, ref, what):
    # Every shard this process holds, bit for bit, of the reference's dtype.
    for key, want in ref.items():
        got = loaded[key]
        assert isinstance(got, jax.Array), (what, key, type(got))
        assert got.dtype == want.dtype and got.shape == want.shape, (what, key, got.dtype, got.shape)
        for s in got.addressable_shards:
            block = np.asarray(s.data)
            assert block.tobytes() == np.ascontiguousarray(want[s.index]).tobytes(), (what, key, s.index)
"""

JOB = (
    BUILD
    + """
mesh = mesh_of(jax.devices())
def glob(value, spec):
    return jax.make_array_from_callback(value.shape, NamedSharding(mesh, spec), lambda i: value[i])

tree = {k: glob(v, s) for k, (v, s) in REF.items()}
KEY_DATA = np.asarray(jax.random.key_data(jax.random.split(jax.random.key(1), 4)))
tree["keys"] = jax.random.wrap_key_data(glob(KEY_DATA, P(("a", "b"))), impl="threefry2x32")
tree["np_leaf"] = np.arange(5, dtype=np.int16)
tree["count"] = 3
path = os.path.join(OUT, "weights.jnet")
jaxnets.save_state_dict(path, tree, progress=True)

params = {k: glob(v, MODEL_SPECS[k]) for k, v in jaxnets.flatten(PARAMS).items()}
params = {"0": {"weight": params["0.weight"], "bias": params["0.bias"]}, "1": {},
          "2": {"weight": params["2.weight"], "bias": params["2.bias"]}}
jaxnets.save(os.path.join(OUT, "model.jnet"), MODEL, params)
# both files complete, no temp file left (process 0 may already be writing alone.jnet below)
assert {"model.jnet", "weights.jnet"} <= set(os.listdir(OUT)), os.listdir(OUT)
assert not [f for f in os.listdir(OUT) if f.startswith(".") and "alone" not in f], os.listdir(OUT)

specs = {k: s for k, (_, s) in REF.items()}
specs["keys"] = P(("a", "b"))
for verify in (True, False):
    sd = jaxnets.load(path, sharding=sharding_fn(mesh, specs), verify=verify).params
    check(sd, {k: v for k, (v, _) in REF.items()}, f"weights verify={verify}")
    assert jax.dtypes.issubdtype(sd["keys"].dtype, jax.dtypes.prng_key)
    check({"keys": jax.random.key_data(sd["keys"])}, {"keys": KEY_DATA}, "keys")
    assert type(sd["np_leaf"]) is np.ndarray and sd["np_leaf"].tolist() == list(range(5))
    assert type(sd["count"]) is int and sd["count"] == 3
loaded = jaxnets.load(os.path.join(OUT, "model.jnet"), sharding=sharding_fn(mesh, MODEL_SPECS))
check(jaxnets.flatten(loaded.params), jaxnets.flatten(PARAMS), "model")
assert loaded.model == MODEL
if PID == 0:  # a tree of this process's own values is saved by it alone, in step with nothing
    jaxnets.save_state_dict(os.path.join(OUT, "alone.jnet"), {"np_leaf": tree["np_leaf"]})
cpu = jaxnets.load(path, device="cpu").params  # this process's CPU, not process 0's
assert cpu["rows"].devices() == {jax.local_devices(backend="cpu")[0]}
if PID == 0:  # a sharded load needs nothing from the other processes
    check(jaxnets.load(path, sharding=sharding_fn(mesh, specs)).params, {"rows": REF["rows"][0]}, "alone")
jaxnets.save_state_dict(path + ".again", tree)  # and the next save of all is still in step
check(jaxnets.load(path + ".again", sharding=sharding_fn(mesh, specs)).params, {"cols": REF["cols"][0]}, "again")
with jaxnets.open(path) as r:  # the whole file, every checksum
    r.verify()
    shard = r.get_tensor("cols", sharding=NamedSharding(mesh, P(None, ("a", "b"))))
    check({"cols": shard}, {"cols": REF["cols"][0]}, "reader")
print("RESULT ok", PID)
"""
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[str]]:
    out = tmp_path_factory.mktemp("job")
    return str(out), run_job(JOB, out, timeout=150)


def test_two_processes_save_one_file_and_load_their_shards_bit_exactly(saved):
    _, outs = saved
    for pid, out in enumerate(outs):
        assert f"RESULT ok {pid}" in out


def test_only_process_0_shows_the_progress_bar(saved):
    _, outs = saved
    assert "saving" in outs[0] and "100%" in outs[0]
    assert "100%" not in outs[1]


@pytest.mark.parametrize("devices", [1, 8])
def test_the_file_loads_in_one_process_with_1_and_8_devices(saved, devices):
    out, _ = saved
    script = BUILD + f"""
import os
assert len(jax.devices()) == {devices}
path, model_path = {os.path.join(out, "weights.jnet")!r}, {os.path.join(out, "model.jnet")!r}
ref = {{k: v for k, (v, _) in REF.items()}}
plain = jaxnets.load(path).params  # the default device
for k, want in ref.items():
    assert np.asarray(plain[k]).tobytes() == want.tobytes() and plain[k].dtype == want.dtype, k
mesh = mesh_of(jax.devices())
specs = {{k: s for k, (_, s) in REF.items()}}
check(jaxnets.load(path, sharding=sharding_fn(mesh, specs)).params, ref, "weights")
loaded = jaxnets.load(model_path, sharding=sharding_fn(mesh, MODEL_SPECS))
check(jaxnets.flatten(loaded.params), jaxnets.flatten(PARAMS), "model")
x = np.ones((2, 64), np.float32)
state = MODEL.init(jax.random.key(0))[1]
want = MODEL.apply(jax.tree.map(jnp.asarray, PARAMS), state, x)[0]
got = loaded.model.apply(jax.tree.map(lambda a: jax.device_put(a, jax.devices()[0]), loaded.params), loaded.state, x)[0]
assert np.array_equal(np.asarray(got), np.asarray(want))
if {devices} > 1:  # one process saving the same tree writes the same layout, checksums and bytes
    from jaxnets.io import format as fmt
    tree = {{k: jax.make_array_from_callback(v.shape, NamedSharding(mesh, s), lambda i, v=v: v[i])
            for k, (v, s) in REF.items()}}
    key_data = np.asarray(jax.random.key_data(jax.random.split(jax.random.key(1), 4)))
    tree["keys"] = jax.random.wrap_key_data(jnp.asarray(key_data), impl="threefry2x32")
    tree["np_leaf"] = np.arange(5, dtype=np.int16)
    tree["count"] = 3
    jaxnets.save_state_dict(path + ".one", tree)
    a, b = fmt.read_header(path), fmt.read_header(path + ".one")
    assert a.columns == b.columns and a.data_start == b.data_start
    assert {{k: v for k, v in a.fields.items() if k != "provenance"}} == {{k: v for k, v in b.fields.items() if k != "provenance"}}
    assert open(path, "rb").read()[a.data_start:] == open(path + ".one", "rb").read()[b.data_start:]
    os.unlink(path + ".one")
print("RESULT ok")
"""
    assert "RESULT ok" in run_single(script, devices=devices)


def test_a_path_the_processes_do_not_share_is_an_error_naming_the_arrays(tmp_path):
    # Each process sees "m.jnet" in a folder of its own (its working directory): as on hosts
    # whose /data is a local disk, the same path names two different files.
    outs = run_job(
        BUILD
        + """
import jaxnets.errors
mesh = mesh_of(jax.devices())
value, spec = REF["rows"]
tree = {"rows": jax.make_array_from_callback(value.shape, NamedSharding(mesh, spec), lambda i: value[i])}
mine = os.path.join(OUT, f"p{PID}")
os.makedirs(mine)
os.chdir(mine)
try:
    jaxnets.save_state_dict("m.jnet", tree)
except jaxnets.JaxnetsError as e:
    print("RAISED", type(e).__name__, e.path, "::", e)
print("LEFT", sorted(os.listdir(mine)))
""",
        tmp_path,
        timeout=120,
    )
    assert "RAISED JaxnetsError rows ::" in outs[1]
    assert "not on a filesystem all processes share" in outs[1] and "process_allgather" in outs[1]
    assert "RAISED JaxnetsError rows ::" in outs[0] and "process 1 failed" in outs[0]
    assert "not on a filesystem all processes share" in outs[0]
    for out in outs:
        assert "LEFT []" in out  # no file, and process 0's temporary file is gone


def test_what_one_file_cannot_hold_is_refused_on_every_process(tmp_path):
    # A per-process value (a numpy array, a key from fold_in(key, process_index)) cannot be one
    # entry of one file: refused on every process, naming the keys, nothing written. Then trees
    # that differ; then a process that never calls save (the other times out, no hang).
    outs = run_job(
        BUILD
        + """
import time
mesh = mesh_of(jax.devices())
value, spec = REF["rows"]
tree = {"rows": jax.make_array_from_callback(value.shape, NamedSharding(mesh, spec), lambda i: value[i]),
        "seed": jax.random.fold_in(jax.random.key(0), jax.process_index()),
        "same": np.ones(3, np.float32), "mine": np.full(3, PID, np.float32)}
try:
    jaxnets.save_state_dict(os.path.join(OUT, "m.jnet"), tree)
except jaxnets.JaxnetsError as e:
    print("RAISED", e.path, "::", e)
# Process 0 removed its temporary file before raising; process 1 may have raised before that.
print("LEFT", sorted(os.listdir(OUT)) if PID == 0 else os.path.exists(os.path.join(OUT, "m.jnet")))
del tree["seed"], tree["mine"]
if PID == 1:
    tree["extra"] = np.zeros(2, np.float32)
try:
    jaxnets.save_state_dict(os.path.join(OUT, "m.jnet"), tree)
except jaxnets.JaxnetsError as e:
    print("TREES", e)
# A check that fails on one process only (its params lack a key): the other raises at once, and
# the next save of both works (they still number their saves alike).
model = nn.Linear(64, 48)
params = {"weight": jax.make_array_from_callback((48, 64), NamedSharding(mesh, P("a")), lambda i: np.ones((48, 64), np.float32)[i]),
          "bias": np.zeros(48, np.float32)}
try:
    jaxnets.save(os.path.join(OUT, "lin.jnet"), model, params if PID == 0 else {"weight": params["weight"]})
except jaxnets.JaxnetsError as e:
    print("CHECK", type(e).__name__, e)
jaxnets.save(os.path.join(OUT, "lin.jnet"), model, params)
os.environ["JAXNETS_PROCESS_TIMEOUT"] = "3"
if PID == 0:
    try:
        jaxnets.save_state_dict(os.path.join(OUT, "m.jnet"), {"rows": tree["rows"]})
    except jaxnets.JaxnetsError as e:
        print("ALONE", e)
else:
    time.sleep(6)  # alive, doing something else
print("FINAL", sorted(os.listdir(OUT)))
""",
        tmp_path,
        timeout=120,
    )
    for out in outs:
        assert "RAISED seed :: " in out and "differ between the processes" in out
        assert "seed, mine" in out and "same" not in out.split("::")[1].split("nothing")[0]
        assert "TREES" in out and "save different trees" in out
    assert "LEFT []" in outs[0] and "LEFT False" in outs[1]
    assert "CHECK StateDictError" in outs[1] and "bias" in outs[1]
    assert "CHECK JaxnetsError" in outs[0] and "process 1 failed: StateDictError" in outs[0]
    assert "ALONE" in outs[0] and "process 1 did not reach step 'plan' within 3 s" in outs[0]
    assert "FINAL ['lin.jnet']" in outs[0]


_PEAK = """
import re, time
def rss(field):
    return int(re.search(field + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1)) << 10
def reset_peak():
    import ctypes, gc
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # memory freed earlier leaves the resident set first
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
MiB = 1 << 20
"""


def test_save_and_sharded_load_peak_at_their_shards_plus_a_little(tmp_path):
    # 256 MiB model over 4 devices: each process holds 128 MiB. Saving writes its shards from
    # the device buffers; loading (in fresh processes, so that no freed memory is reused) reads
    # only its shards. The peak rises by at most what the process ends up holding plus 64 MiB
    # (the bound at 4 GiB is 256 MiB: bench/memory.py).
    common = BUILD + _PEAK + """
mesh = mesh_of(jax.devices())
spec = NamedSharding(mesh, P(("a", "b")))
path = os.path.join(OUT, "big.jnet")
"""
    saves = run_job(
        common
        + """
leaves = {f"w{i}": jax.make_array_from_callback((1024, 16384), spec,
                                                lambda idx, i=i: np.full((256, 16384), i, np.float32))
          for i in range(4)}
jax.block_until_ready(leaves)
reset_peak(); before = rss("VmRSS")
jaxnets.save_state_dict(path, leaves)
rise = rss("VmHWM") - before
print(f"PEAK save rise={rise / MiB:.0f} MiB")
assert rise <= 64 * MiB, rise / MiB
print("RESULT ok")
""",
        tmp_path,
        timeout=120,
    )
    loads = run_job(
        common
        + """
reset_peak(); before = rss("VmRSS")
got = jaxnets.load(path, sharding=spec).params
jax.block_until_ready(got)
rise = rss("VmHWM") - before
shards = sum(s.data.nbytes for a in got.values() for s in a.addressable_shards)
assert all(float(got[f"w{i}"].addressable_shards[0].data[0, 0]) == i for i in range(4))
print(f"PEAK load shards={shards / MiB:.0f} rise={rise / MiB:.0f} MiB")
assert shards == 128 * MiB
assert rise <= shards + 64 * MiB, rise / MiB
print("RESULT ok")
""",
        tmp_path,
        timeout=120,
    )
    for out in saves + loads:
        assert "RESULT ok" in out, out[-3000:]


def test_save_from_devices_peaks_at_the_largest_leaf_plus_a_little(tmp_path):
    # One process, 8 CPU devices, 4 leaves of 64 MiB sharded over them: each leaf is copied to
    # the host (assembled from its shards) only while it is written, and jax keeps no copy.
    out = run_single(
        BUILD
        + _PEAK
        + f"""
import os
mesh = mesh_of(jax.devices())
spec = NamedSharding(mesh, P(("a", "b")))
leaves = {{f"w{{i}}": jax.make_array_from_callback((1024, 16384), spec,
                                                lambda idx, i=i: np.full((128, 16384), i, np.float32))
          for i in range(4)}}
jax.block_until_ready(leaves)
reset_peak(); before = rss("VmRSS")
jaxnets.save_state_dict({str(tmp_path / "m.jnet")!r}, leaves)
rise = rss("VmHWM") - before
after = rss("VmRSS") - before
print(f"PEAK rise={{rise / MiB:.0f}} kept={{after / MiB:.0f}} MiB")
assert rise <= 64 * MiB + 64 * MiB, rise / MiB  # the largest leaf + 64 MiB
assert after <= 16 * MiB, after / MiB  # no host copy left behind on the arrays
print("RESULT ok")
""",
        devices=8,
        timeout=120,
    )
    assert "RESULT ok" in out
