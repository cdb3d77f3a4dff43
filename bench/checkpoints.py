"""Checkpoint save/restore speed: jaxnets.CheckpointManager vs plain orbax, side by side.

Trees (sizes are TOTAL bytes of the tree, float32 leaves of random values; ``--scale``
multiplies them):

* ``16 leaves x 256 MiB``: 16 leaves of 16 MiB;
* ``ResNet-18 + adam``: the 62 params (11.7 M values) and 40 BatchNorm buffers of
  torchvision's ResNet-18 with an adam state (mu, nu, count): 227 leaves, 134 MiB;
* ``2000 leaves x 64 MiB``: 2,000 leaves of 32 KiB (orbax's per-leaf cost dominates);
* ``20000 leaves x 64 MiB``: 20,000 leaves of 3.2 KiB (jaxnets only: a plain orbax save of
  20,000 leaves takes minutes).

Plain orbax is ``ocp.StandardCheckpointer()`` with default settings (async): ``save`` then
``wait_until_finished``; restore with an abstract tree. jaxnets is ``CheckpointManager`` with
defaults (async) — ``save`` then ``wait`` — and also with ``async_save=False``; restore with no
template, with checksums verified (the default) and with ``verify=False``. Everything is warmed
up by one save first, as in a training loop, and the contenders are interleaved repetition by
repetition. Reported: medians (the verify rows: best of the repetitions), and these ratios
(goals in parentheses):

* the async stall: how long ``save()`` blocks the training loop, as a share of a synchronous
  save of the same manager (<= 10%);
* the verify cost: (restore - restore with verify=False), back to back, as a share of the
  restore (<= 15%); and the checksum work alone (the metadata's and every array's, on arrays
  already read) as a share of the restore, the same figure without the noise of two restores.

Multi-process (``--processes 2``, also part of the default run): a 2-process ``jax.distributed``
job on 127.0.0.1 (2 CPU devices per process, gloo; the test suite's launcher,
``tests/multihost/_multihost.py``) saves and restores 2,000 small leaves of global arrays (half
row-sharded over the 4 devices, half replicated; ``--leaves``), synchronously, with the default
packing (each process packs the pieces it owns into its row of one buffer per dtype; replicated
leaves written once) against ``group_below=0`` (every leaf an orbax array). Restores are onto the
saving shardings (``like=``), checksums verified. Reported: process 0's medians, interleaved;
and, for reference, the packed save and restore of the same tree by one process with 4 devices.

Run: ``python bench/checkpoints.py [--scale 1.0] [--repeat 5] [--processes 2] [--leaves 2000]``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _tree(n_leaves: int, total_bytes: int) -> dict[str, Any]:
    # Random values, as trained weights are: orbax compresses (zstd), and constant arrays would
    # make its files tiny and every restore unrealistically cheap.
    per = max(1, total_bytes // (4 * n_leaves))
    data = np.random.default_rng(0).standard_normal(per * n_leaves, dtype=np.float32)
    return {f"layer{i}": {"w": jnp.asarray(data[i * per : (i + 1) * per])} for i in range(n_leaves)}


def _resnet18_shapes() -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """torchvision ResNet-18's state_dict shapes: (params, buffers)."""
    params: dict[str, tuple[int, ...]] = {"conv1.weight": (64, 3, 7, 7)}
    buffers: dict[str, tuple[int, ...]] = {}

    def bn(name: str, c: int) -> None:
        params[f"{name}.weight"] = params[f"{name}.bias"] = (c,)
        buffers[f"{name}.running_mean"] = buffers[f"{name}.running_var"] = (c,)

    bn("bn1", 64)
    cin = 64
    for layer, cout in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            p = f"layer{layer}.{block}"
            stride_in = cin if block == 0 else cout
            params[f"{p}.conv1.weight"] = (cout, stride_in, 3, 3)
            bn(f"{p}.bn1", cout)
            params[f"{p}.conv2.weight"] = (cout, cout, 3, 3)
            bn(f"{p}.bn2", cout)
            if block == 0 and cin != cout:
                params[f"{p}.downsample.0.weight"] = (cout, cin, 1, 1)
                bn(f"{p}.downsample.1", cout)
        cin = cout
    params["fc.weight"], params["fc.bias"] = (1000, 512), (1000,)
    return params, buffers


def _resnet18_record(scale: float) -> dict[str, Any]:
    import optax

    p_shapes, b_shapes = _resnet18_shapes()
    rng = np.random.default_rng(0)

    def arr(shape: tuple[int, ...]) -> jax.Array:
        if scale != 1.0:  # a smaller tree of the same structure
            shape = (max(1, int(shape[0] * scale)),) + shape[1:]
        return jnp.asarray(rng.standard_normal(shape, dtype=np.float32))

    params = {k: arr(s) for k, s in p_shapes.items()}
    buffers = {k: arr(s) for k, s in b_shapes.items()}
    return {"params": params, "state": buffers, "opt_state": optax.adam(1e-3).init(params)}


def _verify_work(step_dir: Path) -> float:
    """Seconds that verifying one step's checksums takes, on arrays already read."""
    import orbax.checkpoint as ocp

    from jaxnets.checkpoint._integrity import verify_checksums
    from jaxnets.checkpoint.meta import array_specs, json_checksum, read_meta

    meta = read_meta(step_dir, verify=False)
    specs = array_specs(meta, list(meta["leaves"]))
    arrays = ocp.PyTreeCheckpointer().restore(step_dir / "arrays")
    t = time.perf_counter()
    json_checksum({k: v for k, v in meta.items() if k != "xxh3"})
    verify_checksums(specs, arrays, step_dir=str(step_dir))
    return time.perf_counter() - t


def _short(label: str) -> str:
    """A chart label: ``"save\n16 leaves"`` for ``"16 leaves x 256 MiB: save + wait (...)"``."""
    tree, op = label.split(": ", 1)
    op = {"save + wait (defaults, async)": "save", "async save() stall": "save() stall"}.get(op, op)
    return f"{op}\n{tree.split(' x ')[0]}"


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _bench_case(
    name: str, record: dict[str, Any], root: Path, repeat: int, *, orbax: bool
) -> list[tuple[str, float | None, float]]:
    import orbax.checkpoint as ocp

    from jaxnets.checkpoint import CheckpointManager

    jax.block_until_ready(record)
    ck = ocp.StandardCheckpointer() if orbax else None  # plain orbax, default settings (async)
    jn_async = CheckpointManager(root / "jn_async")
    jn_sync = CheckpointManager(root / "jn_sync", async_save=False)
    if ck is not None:
        ck.save(root / "orbax_warm", record)
        ck.wait_until_finished()
    for mgr in (jn_async, jn_sync):
        mgr.save(0, **record)
        mgr.wait()
    t_: dict[str, list[float]] = {
        k: [] for k in ("o_save", "o_stall", "j_save", "j_stall", "j_sync", "o_rest", "j_rest", "j_nover")
    }
    for i in range(repeat):
        if ck is not None:
            t = time.perf_counter()
            ck.save(root / f"orbax{i}", record)
            t_["o_stall"].append(time.perf_counter() - t)
            ck.wait_until_finished()
            t_["o_save"].append(time.perf_counter() - t)
        t = time.perf_counter()
        jn_async.save(i + 1, **record)
        t_["j_stall"].append(time.perf_counter() - t)
        jn_async.wait()
        t_["j_save"].append(time.perf_counter() - t)
        t = time.perf_counter()
        jn_sync.save(i + 1, **record)
        t_["j_sync"].append(time.perf_counter() - t)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, record)
    for i in range(repeat):
        if ck is not None:
            t = time.perf_counter()
            jax.block_until_ready(ck.restore(root / "orbax0", abstract))
            t_["o_rest"].append(time.perf_counter() - t)
        pair = {}
        for verify in (True, False) if i % 2 else (False, True):  # back to back, both orders
            t = time.perf_counter()
            c = jn_async.restore(1, verify=verify)
            jax.block_until_ready((c.params, c.state, c.opt_state))
            pair[verify] = time.perf_counter() - t
        t_["j_rest"].append(pair[True])
        t_["j_nover"].append(pair[False])
    # The verification work itself, timed alone on the same step: the metadata's checksum and
    # the checksums of every stored array, read as a restore reads them.
    t_["j_hash"] = [_verify_work(root / "jn_async" / "1") for _ in range(repeat)]
    if ck is not None:
        ck.close()
    jn_async.close()
    jn_sync.close()
    med = {k: _median(v) for k, v in t_.items()}
    # The verify rows: best of the repetitions, the figure least disturbed by other processes.
    med["j_rest_min"], med["j_hash"] = min(t_["j_rest"]), min(t_["j_hash"])
    med["j_vcost"] = max(0.0, med["j_rest_min"] - min(t_["j_nover"]))
    o = (lambda k: med[k]) if orbax else (lambda k: None)
    return [
        (f"{name}: save + wait (defaults, async)", o("o_save"), med["j_save"]),
        (f"{name}: save, jaxnets async_save=False", o("o_save"), med["j_sync"]),
        (f"{name}: restore", o("o_rest"), med["j_rest"]),
        (f"{name}: async save() stall", o("o_stall"), med["j_stall"]),
        (f"{name}: jaxnets stall / jaxnets sync save", med["j_sync"], med["j_stall"]),
        (f"{name}: verify cost / jaxnets restore (best of)", med["j_rest_min"], med["j_vcost"]),
        (f"{name}: checksum work / jaxnets restore (best of)", med["j_rest_min"], med["j_hash"]),
        (f"{name}: orbax stall / orbax save + wait", o("o_save"), med["o_stall"]),
    ]


_MULTI = """
import json, statistics, time
import numpy as np
import jaxnets
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
N, REPEAT = int(sys.argv[6]), int(sys.argv[7])
mesh = Mesh(np.array(jax.devices()), ("x",))
rows, rep = NamedSharding(mesh, P("x")), NamedSharding(mesh, P())
data = np.random.default_rng(0).standard_normal((N, 1024), dtype=np.float32)  # 4 KiB a leaf
params = {f"layer{i}": {"w": jax.make_array_from_callback((1024,), rows if i % 2 else rep, lambda ix, i=i: data[i][ix])}
          for i in range(N)}
jax.block_until_ready(params)
mgrs = {name: jaxnets.CheckpointManager(os.path.join(OUT, name), async_save=False, group_below=g)
        for name, g in (("packed", 1 << 20), ("group_below=0", 0))}
times = {f"{name} {op}": [] for name in mgrs for op in ("save", "restore")}
for name, mgr in mgrs.items():  # warm-up: plans, compilations
    mgr.save(0, params=params)
    jax.block_until_ready(mgr.restore(0, like={"params": params}).params)
for r in range(1, REPEAT + 1):
    for name, mgr in mgrs.items():
        t = time.perf_counter()
        mgr.save(r, params=params)
        times[f"{name} save"].append(time.perf_counter() - t)
        t = time.perf_counter()
        c = mgr.restore(r, like={"params": params})
        jax.block_until_ready(c.params)
        times[f"{name} restore"].append(time.perf_counter() - t)
if PID == 0:
    print("TIMES " + json.dumps({k: statistics.median(v) for k, v in times.items()}), flush=True)
"""


def _multi_process(processes: int, leaves: int, repeat: int) -> dict[str, float]:
    """Medians (process 0's) of the multi-process case (see the module docstring)."""
    import json

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "multihost"))
    from _multihost import run_job  # the test suite's bounded launcher

    root = Path(tempfile.mkdtemp(prefix="jaxnets-bench-mp-"))
    try:
        script = _MULTI.replace("int(sys.argv[6]), int(sys.argv[7])", f"{leaves}, {repeat}")
        outs = run_job(script, root, processes=processes, devices=max(1, 4 // processes), timeout=600)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    line = next(x for x in outs[0].splitlines() if x.startswith("TIMES "))
    return dict(json.loads(line[len("TIMES ") :]))


def _print_multi(processes: int, leaves: int, repeat: int) -> None:
    one = _multi_process(1, leaves, repeat)  # the same tree on 4 devices of one process
    t = _multi_process(processes, leaves, repeat)
    print(f"\n{leaves} leaves of 4 KiB (half row-sharded over 4 CPU devices, half replicated), sync "
          f"save / restore onto the saving shardings, medians of {repeat}; {processes} processes x "
          f"{4 // processes} devices, and 1 process x 4 devices for reference:")
    print(f"{'':<10} {'packed s':>10} {'group_below=0 s':>16} {'ratio':>8} {'1 process, packed s':>20}")
    for op in ("save", "restore"):
        a, b = t[f"packed {op}"], t[f"group_below=0 {op}"]
        print(f"{op:<10} {a:>10.3f} {b:>16.3f} {b / a:>7.1f}x {one[f'packed {op}']:>20.3f}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the tree sizes")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--processes", type=int, default=0,
                    help="run only the multi-process case, with this many processes")
    ap.add_argument("--leaves", type=int, default=2000, help="leaves of the multi-process case")
    args = ap.parse_args(argv)
    if args.processes:
        _print_multi(args.processes, args.leaves, args.repeat)
        return
    mib = 1 << 20
    cases = [
        ("16 leaves x 256 MiB", lambda: {"params": _tree(16, int(256 * mib * args.scale))}, True),
        ("ResNet-18 + adam", lambda: _resnet18_record(args.scale), True),
        ("2000 leaves x 64 MiB", lambda: {"params": _tree(2000, int(64 * mib * args.scale))}, True),
        ("20000 leaves x 64 MiB", lambda: {"params": _tree(20000, int(64 * mib * args.scale))}, False),
    ]
    rows = []
    for name, make, orbax in cases:
        root = Path(tempfile.mkdtemp(prefix="jaxnets-bench-ckpt-"))
        try:
            rows += _bench_case(name, make(), root, args.repeat, orbax=orbax)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    print(f"{'case':<66} {'orbax s':>10} {'jaxnets s':>10} {'ratio':>8}")
    for label, base, ours in rows:
        if base is None or base != base:
            if " / " not in label:
                print(f"{label:<66} {'-':>10} {ours:>10.3f} {'-':>8}")
            continue
        if " / " in label:
            print(f"{label:<66} {base:>10.3f} {ours:>10.3f} {ours / base:>8.1%}")
        else:
            print(f"{label:<66} {base:>10.3f} {ours:>10.3f} {base / ours:>7.2f}x")
    try:  # the panel in docs/benchmarks.png (bench/chart.py is the lead's; optional here)
        sys.path.insert(0, str(Path(__file__).parent))
        from chart import write_results

        write_results(
            "checkpoints",
            "Checkpoints: seconds (orbax StandardCheckpointer vs jaxnets CheckpointManager)",
            {
                _short(label): {"orbax": base, "jaxnets": ours}
                for label, base, ours in rows
                if base is not None and " / " not in label and "async_save=False" not in label
                and not label.startswith("ResNet")
            },
        )
    except ImportError:
        pass
    print(
        "ratio: orbax time / jaxnets time (higher is better). 'X / Y' rows: seconds of Y, "
        "seconds of X, X as a share of Y (goals: stall <= 10%, verify cost <= 15%)."
    )
    _print_multi(2, args.leaves, min(args.repeat, 3))


if __name__ == "__main__":
    main()
