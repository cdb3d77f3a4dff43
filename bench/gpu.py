"""GPU: model files and checkpoints of arrays on the device, against transfer floors and orbax.

Without a GPU (``jax.devices("gpu")`` fails) this prints why and exits 0, measuring and writing
nothing, so ``make bench`` runs everywhere. On a GPU it measures, with every array on the device
(fresh device copies before each timed operation: a jax array caches its host copy, so timing the
same array twice would time the cache):

* **model-file save** from device arrays: ``jaxnets.save`` (ResNet-18 with its model config) and
  ``jaxnets.save_state_dict`` (large and many-leaf trees), against the device-to-host copy floor
  (``jax.device_get`` of the tree) and the same plus a raw write of the bytes with one fsync;
* **``jaxnets.load(path, device=gpu)``** against the host-to-device floor (one batched
  ``jax.device_put`` of numpy arrays already in memory) and a raw read of the bytes plus it;
* **checkpoints**: ``jaxnets.CheckpointManager`` (async by default; also ``async_save=False``)
  against plain orbax (``ocp.StandardCheckpointer()``, async): save + wait, restore onto the GPU,
  and the async stall (how long ``save()`` blocks the training loop; goal <= 10% of a synchronous
  save);
* **a 2-device checkpoint**: a tree sharded over two GPUs, saved, then restored with
  ``device="cpu"`` and compared with what was saved (skipped, saying so, with one GPU).

Every result is checked once against what was saved (bit for bit, and on the requested device),
so a fast wrong answer fails instead of being timed. Contenders are interleaved repetition by
repetition; the first repetition warms up and is dropped; reported: medians. Files go to
``/dev/shm`` when it exists (the device transfers are under test, not the disk; ``--dir``
changes it; without room there, the system's temporary folder). Prints a table and writes bench/results/gpu.json (a panel of docs/benchmarks.png).

Run on a GPU machine: ``python bench/gpu.py`` (not yet run on a GPU; the same work on the CPU
backend, ``--device cpu`` at ``--scale 1``, takes 2 minutes on the 2-core project machine).
Debug the code paths without a GPU: ``python bench/gpu.py --device cpu --scale 0.05`` (the CPU
backend with two host devices; writes no results unless ``--json PATH``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MiB = 1 << 20


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("gpu", "cpu"), default="gpu",
                    help="cpu: a debug run on the CPU backend with 2 host devices (no results)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the tree sizes")
    ap.add_argument("--repeat", type=int, default=3, help="timed repetitions (median)")
    ap.add_argument("--dir", type=Path, default=None, help="where files go (default /dev/shm)")
    ap.add_argument("--json", type=Path, default=None,
                    help="results file (default bench/results/gpu.json on a GPU, none on --device cpu)")
    args, _ = ap.parse_known_args(argv)  # make bench passes its own arguments to every script
    return args


# ---- trees on the device ----------------------------------------------------------------------
def _flat(n_leaves: int, total: int, device: Any) -> dict[str, Any]:
    """``n_leaves`` float32 leaves of random values totalling ``total`` bytes, 2-D with an even
    first dimension (so the 2-device case can split them), on ``device``."""
    import jax
    import numpy as np

    cols = 1024 if total // n_leaves >= 8 * 1024 else 16
    rows = max(2, total // 4 // n_leaves // cols // 2 * 2)
    rng = np.random.default_rng(0)
    base = rng.standard_normal(rows * cols, dtype=np.float32).reshape(rows, cols)
    host = {f"layers.{i}.weight": base + np.float32(i) for i in range(n_leaves)}
    return jax.device_put(host, device)


def _resnet18(device: Any) -> tuple[Any, dict[str, Any]]:
    """jaxnets' ResNet-18 and ``{"params", "state", "opt_state"}`` (adam) on ``device``."""
    import jax
    import optax

    import jaxnets

    model = jaxnets.models.resnet18()
    with jax.default_device(device):
        params, state = jax.jit(model.init)(jax.random.key(0))
        opt_state = optax.adam(1e-3).init(params)
    return model, {"params": params, "state": state, "opt_state": opt_state}


def _fresh(tree: Any) -> Any:
    """A device copy of every array (same placement and sharding), ready: no cached host copy."""
    import jax

    return jax.block_until_ready(jax.tree.map(lambda a: a.copy(), tree))


def _nbytes(tree: Any) -> int:
    import jax

    return sum(int(a.nbytes) for a in jax.tree.leaves(tree))


def _bits(a: Any) -> Any:
    import numpy as np

    return np.asarray(a).reshape(-1).view(np.uint8)  # NaN payloads and -0.0 count


def _same(name: str, got: Any, want_host: Any, device: Any | None) -> None:
    """Raises unless ``got`` equals ``want_host`` bit for bit (and sits on ``device``)."""
    import jax
    import numpy as np

    g, w = jax.tree.leaves(got), jax.tree.leaves(want_host)
    if jax.tree.structure(got) != jax.tree.structure(want_host) or len(g) != len(w):
        raise RuntimeError(f"{name}: a different tree came back")
    for a, b in zip(g, w):
        if device is not None and a.devices() != {device}:
            raise RuntimeError(f"{name}: an array came back on {a.devices()}, not {device}")
        if not np.array_equal(_bits(a), _bits(b)):
            raise RuntimeError(f"{name}: an array came back with other values")


# ---- the measurements -------------------------------------------------------------------------
Row = tuple[str, dict[str, float]]  # (label, {contender: seconds}); "jaxnets" is always there


def _timed(fns: dict[str, Callable[[], Any]], repeat: int) -> dict[str, float]:
    """Median seconds of each ``fn()`` over ``repeat`` interleaved repetitions, after one warm-up.

    Each fn returns a thunk to run untimed first (making fresh device copies), or None.
    """
    import jax

    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeat + 1):
        for k, prepare in fns.items():
            op = prepare()
            t = time.perf_counter()
            jax.block_until_ready(op())
            if r:
                times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_files(name: str, tree: dict[str, Any], model: Any, dev: Any, root: Path,
                repeat: int) -> list[Row]:
    """Model-file save from device arrays and ``jaxnets.load`` onto ``dev``, against the floors."""
    import jax
    from files import raw_load, raw_save

    import jaxnets

    root.mkdir(parents=True, exist_ok=True)
    host = jax.device_get(tree)
    flat_host = dict(zip(map(str, range(len(jax.tree.leaves(host)))), jax.tree.leaves(host)))
    path, raw = root / f"{name}.jaxnets", root / f"{name}.raw"

    def save() -> Any:
        if model is None:
            jaxnets.save_state_dict(path, t["x"])
        else:
            jaxnets.save(path, model, t["x"]["params"], t["x"]["state"])

    def d2h_write() -> Any:
        raw_save(dict(zip(flat_host, jax.tree.leaves(jax.device_get(t["x"])))), str(raw))

    t: dict[str, Any] = {}

    def fresh(op: Callable[[], Any]) -> Callable[[], Callable[[], Any]]:
        def prepare() -> Callable[[], Any]:
            t["x"] = None  # free the last copy first
            t["x"] = _fresh(tree)
            return op

        return prepare

    saves = _timed({"jaxnets": fresh(save), "D2H floor": fresh(lambda: jax.device_get(t["x"])),
                    "D2H + write floor": fresh(d2h_write)}, repeat)
    t.clear()

    def load() -> Any:
        loaded = jaxnets.load(path, device=dev)
        return loaded.params if model is None else {"params": loaded.params, "state": loaded.state}

    leaves = jax.tree.leaves(host)
    _same(f"{name}: jaxnets.load", load(), host if model is None else
          {"params": host["params"], "state": host["state"]}, dev)
    loads = _timed({
        "jaxnets": lambda: load,
        "H2D floor": lambda: lambda: jax.device_put(leaves, dev),
        "read + H2D floor": lambda: lambda: jax.device_put(list(raw_load(str(raw), flat_host).values()), dev),
    }, repeat)
    path.unlink()
    raw.unlink()
    mb = _nbytes(tree) / MiB
    return [(f"{name}, {mb:.0f} MiB: file save", saves), (f"{name}, {mb:.0f} MiB: load", loads)]


def bench_checkpoints(name: str, record: dict[str, Any], dev: Any, root: Path,
                      repeat: int) -> list[Row]:
    """CheckpointManager vs plain orbax on device arrays: save + wait, stall, restore."""
    import jax
    import orbax.checkpoint as ocp

    import jaxnets

    host = jax.device_get(record)
    ck = ocp.StandardCheckpointer()
    # At most two steps of each on disk at a time (the files may be in a small /dev/shm).
    jn = jaxnets.CheckpointManager(root / f"{name}-jn", max_to_keep=1)
    jn_sync = jaxnets.CheckpointManager(root / f"{name}-jn-sync", async_save=False, max_to_keep=1)
    times: dict[str, list[float]] = {k: [] for k in ("o_save", "o_stall", "j_save", "j_stall", "j_sync")}
    for r in range(repeat + 1):  # the first repetition warms up
        for k in ("o", "j", "s"):
            x = _fresh(record)
            t0 = time.perf_counter()
            if k == "o":
                ck.save(root / f"{name}-orbax{r}", x)
                t1 = time.perf_counter()
                ck.wait_until_finished()
                if r > 1:  # keep the first (restored below) and the last
                    shutil.rmtree(root / f"{name}-orbax{r - 1}")
            elif k == "j":
                jn.save(r, **x)
                t1 = time.perf_counter()
                jn.wait()
            else:
                jn_sync.save(r, **x)
                t1 = time.perf_counter()
            t2 = time.perf_counter()
            del x
            if r:
                if k == "s":
                    times["j_sync"].append(t2 - t0)
                else:
                    times[f"{k}_save"].append(t2 - t0)
                    times[f"{k}_stall"].append(t1 - t0)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, record)
    got = jn.restore(device=dev)  # the latest step
    _same(f"{name}: CheckpointManager.restore", {k: getattr(got, k) for k in record}, host, dev)
    _same(f"{name}: orbax restore", ck.restore(root / f"{name}-orbax0", abstract), host, dev)

    def jn_restore() -> Any:
        c = jn.restore(device=dev)
        return [getattr(c, k) for k in record]

    rest = _timed({"jaxnets": lambda: jn_restore,
                   "orbax": lambda: lambda: ck.restore(root / f"{name}-orbax0", abstract)}, repeat)
    ck.close()
    jn.close()
    jn_sync.close()
    shutil.rmtree(root)
    med = {k: statistics.median(v) for k, v in times.items()}
    mb = _nbytes(record) / MiB
    label = f"{name}, {mb:.0f} MiB: checkpoint"
    return [
        (f"{label} save + wait", {"jaxnets": med["j_save"], "orbax": med["o_save"]}),
        (f"{label} save, async_save=False", {"jaxnets": med["j_sync"], "orbax": med["o_save"]}),
        (f"{label} restore", rest),
        (f"{label} save() stall", {"jaxnets": med["j_stall"], "orbax": med["o_stall"],
                                   "jaxnets sync save": med["j_sync"]}),
    ]


def bench_two_devices(devs: list[Any], scale: float, root: Path, repeat: int) -> list[Row]:
    """A checkpoint of a tree sharded over two devices, restored with ``device="cpu"`` (against
    plain orbax restoring the same tree onto the CPU)."""
    import jax
    import numpy as np
    import orbax.checkpoint as ocp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding

    import jaxnets

    mesh = Mesh(np.array(devs[:2]), ("x",))
    sharded = jax.device_put(_flat(16, int(256 * MiB * scale), devs[0]),
                             NamedSharding(mesh, PartitionSpec("x")))
    host = jax.device_get(sharded)
    cpu = jax.devices("cpu")[0]
    on_cpu = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=SingleDeviceSharding(cpu)), sharded
    )
    ck = ocp.StandardCheckpointer()
    ck.save(root / "two-devices-orbax", _fresh(sharded))
    ck.wait_until_finished()
    with jaxnets.CheckpointManager(root / "two-devices", max_to_keep=1) as mgr:
        saves = []
        for step in range(repeat + 1):
            x = _fresh(sharded)
            t = time.perf_counter()
            mgr.save(step, params=x)
            mgr.wait()
            saves.append(time.perf_counter() - t)
            del x
        _same("2-device checkpoint restored on the CPU", mgr.restore(device="cpu").params, host, cpu)
        _same("2-device orbax checkpoint restored on the CPU",
              ck.restore(root / "two-devices-orbax", on_cpu), host, cpu)
        rest = _timed({
            "jaxnets": lambda: lambda: mgr.restore(device="cpu").params,
            "orbax": lambda: lambda: ck.restore(root / "two-devices-orbax", on_cpu),
        }, repeat)
    ck.close()
    shutil.rmtree(root)
    mb = _nbytes(sharded) / MiB
    label = f"16 leaves on 2 devices, {mb:.0f} MiB: checkpoint"
    return [(f"{label} save + wait", {"jaxnets": statistics.median(saves[1:])}),
            (f"{label} restore with device='cpu'", rest)]


def _shm(need: int) -> Path | None:
    """/dev/shm when it is writable and has ``need`` bytes free (containers often give it 64 MB),
    else None (the system's temporary folder)."""
    shm = Path("/dev/shm")
    try:
        ok = os.access(shm, os.W_OK) and shutil.disk_usage(shm).free >= need
    except OSError:
        ok = False
    return shm if ok else None


def _short(label: str) -> str:
    """A chart label, ``"ckpt save, 16 leaves"`` for ``"16 leaves, 1024 MiB: checkpoint save + wait"``."""
    tree, op = label.split(": ", 1)
    tree = tree.split(", ")[0].replace(" on 2 devices", " on 2 GPUs")
    op = op.replace("checkpoint ", "ckpt ").replace(" + wait", "").replace(" with device='cpu'", " to CPU")
    return f"{op}, {tree}"


def _ratio(other: str, ours: float, theirs: float) -> str:
    if other == "jaxnets sync save":  # the stall row: the stall as a share of a synchronous save
        return f"stall {ours / theirs:.1%}"
    return f"{ours / theirs:.2f}x"


def _table(rows: list[Row]) -> None:
    print(f"{'case':<62} {'jaxnets s':>10}   others (jaxnets / other)")
    for label, r in rows:
        others = "  ".join(f"{k} {v:.4f} ({_ratio(k, r['jaxnets'], v)})" for k, v in r.items()
                           if k != "jaxnets" and v > 0)
        print(f"{label:<62} {r['jaxnets']:>10.4f}   {others}")
    print("(goal: the jaxnets stall <= 10% of its synchronous save)")


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if args.device == "cpu":  # before jax is imported: the debug run gets two host devices
        os.environ["JAX_PLATFORMS"] = "cpu"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + " --xla_force_host_platform_device_count=2").strip()
    import jax

    try:
        devs = jax.devices(args.device)
    except RuntimeError as e:
        print(f"bench/gpu.py: no GPU here, nothing measured and no results written "
              f"(jax.devices('gpu') failed: {str(e).splitlines()[0]}). Run it on a machine with "
              "a GPU and jax's CUDA build; `--device cpu` runs the code paths on the CPU.")
        return 0
    sys.path[:0] = [str(HERE.parent), str(HERE)]
    dev = devs[0]
    base = args.dir or _shm(int(10 * 1024 * MiB * args.scale))
    root = Path(tempfile.mkdtemp(prefix="jaxnets-bench-gpu-", dir=base))
    print(f"{args.device}: {dev.device_kind} x {len(devs)}, jax {jax.__version__}; files in {root}; "
          f"median of {args.repeat} after a warm-up; scale {args.scale}", flush=True)
    rows: list[Row] = []
    try:
        model, record = _resnet18(dev)
        s = args.scale
        trees = [("ResNet-18", {"params": record["params"], "state": record["state"]}, model),
                 ("16 leaves", _flat(16, int(1024 * MiB * s), dev), None),
                 ("2000 leaves", _flat(2000, int(64 * MiB * s), dev), None)]
        for name, tree, m in trees:
            rows += bench_files(name, tree, m, dev, root / "files", args.repeat)
            print(f"  {name}: files done", flush=True)
        ckpts = [("ResNet-18 + adam", record), ("16 leaves", {"params": trees[1][1]}),
                 ("2000 leaves", {"params": trees[2][1]})]
        for name, rec in ckpts:
            rows += bench_checkpoints(name, rec, dev, root / f"ckpt-{name}", args.repeat)
            print(f"  {name}: checkpoints done", flush=True)
        if len(devs) >= 2:
            rows += bench_two_devices(devs, s, root / "two-devices", args.repeat)
        else:
            print("  2-device checkpoint restored on the CPU: skipped (one GPU here)")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    _table(rows)
    out = args.json or (None if args.device == "cpu" else HERE / "results" / "gpu.json")
    if out is not None:
        from chart import write_results

        title = f"{dev.device_kind}: device arrays to files and checkpoints and back (s)"
        groups = {_short(label): {k: v for k, v in r.items() if k != "jaxnets sync save"}
                  for label, r in rows if "async_save=False" not in label}  # shown as the stall
        print("wrote", write_results(out.stem, title, groups, directory=out.parent,
                                     machine=f"{dev.device_kind} x {len(devs)}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
