"""Model-file speed: jaxnets.save_state_dict / read against raw writes, safetensors, torch, flax, orbax.

Trees of float32 numpy arrays, read as TOTAL sizes (the issue's "16 leaves x 256 MiB, 64 x 1 GiB,
2000 x 64 MiB" do not fit a 24 GiB, 2-core machine as per-leaf sizes), on two axes:

* size: 16 leaves totalling 256 MiB, 64 leaves totalling 1 GiB;
* keys: 2,000 and 20,000 leaves, each totalling 64 MiB (32 KiB and 3.3 KiB per leaf);
* ``--scale`` multiplies every total (``--scale 0.1`` for a quick run).

Three operations per tree: **save**, **load** (the whole file into numpy arrays) and **per-key**
(open lazily, then read every key one by one: ``r = jaxnets.open(p); [r[k] for k in r.keys()]``
against safetensors' ``safe_open(p).get_tensor(k)``; only methods with a lazy reader have it).

Fairness: every saver is followed by an ``fsync`` of every file it wrote (jaxnets and the raw write
fsync themselves; safetensors, torch, flax and orbax get an explicit fsync pass inside the timing).
The raw write is the floor: the same tensor bytes with plain buffered file writes (4 MiB buffer,
as ``open(path, "wb")`` with a large buffer), then ``fsync``. Loads are *warm* (the file was just
written and is in the page cache; dropping the cache needs root) unless ``--cold``, which evicts
each method's files with ``posix_fadvise(DONTNEED)`` first. Every load produces numpy arrays
(jaxnets: ``Reader.read_all``, checksums verified; orbax: its restored arrays) except the
``jaxnets.load`` row, whose tree is of jax arrays (made before the timing) that it saves and loads
back onto the default jax device, as a model's params are. Methods are interleaved
repetition by repetition, so a change in the machine's load hits them alike; best of ``--repeat``.

Run: ``python bench/files.py [--scale S] [--cold] [--repeat N] [--only 2000,20000] [--methods ...]``.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

MiB = 1 << 20
CASES = [(16, 256 * MiB), (64, 1024 * MiB), (2000, 64 * MiB), (20000, 64 * MiB)]


def _tree(n_leaves: int, total: int) -> dict[str, np.ndarray]:
    per = max(1, total // 4 // n_leaves)
    rng = np.random.default_rng(0)
    base = rng.standard_normal(min(per, 1 << 22), dtype=np.float32)
    out = {}
    for i in range(n_leaves):
        a = np.resize(base, per)
        a[0] = i
        out[f"layers.{i}.weight"] = a
    return out


def _fsync_paths(path: str) -> None:
    paths = (
        [path]
        if os.path.isfile(path)
        else [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs]
    )
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _evict(path: str) -> None:
    paths = (
        [path]
        if os.path.isfile(path)
        else [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs]
    )
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


# --- the contenders: (save(tree, path), load(path, tree) -> {key: array}) ---------------------------------
def raw_save(tree: dict[str, np.ndarray], path: str) -> None:
    with open(path, "wb", buffering=4 * MiB) as f:  # small arrays coalesce; big ones pass through
        for a in tree.values():
            f.write(memoryview(a.reshape(-1).view(np.uint8)))
        f.flush()
        os.fsync(f.fileno())


def raw_load(path: str, tree: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    with open(path, "rb", buffering=0) as f:
        for k, a in tree.items():
            b = np.empty_like(a)
            f.readinto(memoryview(b.reshape(-1).view(np.uint8)))
            out[k] = b
    return out


def jaxnets_save(tree: dict[str, np.ndarray], path: str) -> None:
    import jaxnets

    jaxnets.save_state_dict(path, tree)


def jaxnets_read(path: str, tree: dict[str, np.ndarray]) -> dict[str, Any]:
    import jaxnets

    with jaxnets.open(path) as r:
        return r.read_all("model")["model"]


def jaxnets_per_key(path: str, tree: dict[str, np.ndarray]) -> dict[str, Any]:
    import jaxnets

    with jaxnets.open(path) as r:
        return {k: r[k] for k in r.keys()}


_ON_DEVICE: dict[int, tuple[Any, Any]] = {}  # id(numpy tree) -> (that tree, its jax twin)


def _on_device(tree: dict[str, np.ndarray]) -> dict[str, Any]:
    """The jax twin of a numpy tree, made once (before the timing: see _measure)."""
    import jax

    hit = _ON_DEVICE.get(id(tree))
    if hit is None or hit[0] is not tree:
        hit = _ON_DEVICE[id(tree)] = (tree, dict(zip(tree, jax.device_put(list(tree.values())))))
    return hit[1]


def jaxnets_save_jax(tree: dict[str, np.ndarray], path: str) -> None:
    import jaxnets

    jaxnets.save_state_dict(path, _on_device(tree))


def jaxnets_load(path: str, tree: dict[str, np.ndarray]) -> dict[str, Any]:
    import jax

    import jaxnets

    out = jaxnets.load(path).params
    jax.block_until_ready(out)
    return out


def safetensors_save(tree: dict[str, np.ndarray], path: str) -> None:
    from safetensors.numpy import save_file

    save_file(tree, path)
    _fsync_paths(path)


def safetensors_load(path: str, tree: dict[str, np.ndarray]) -> dict[str, Any]:
    from safetensors.numpy import load_file

    return load_file(path)


def safetensors_per_key(path: str, tree: dict[str, np.ndarray]) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(path, framework="np") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def torch_save(tree: dict[str, np.ndarray], path: str) -> None:
    import torch

    torch.save({k: torch.from_numpy(v) for k, v in tree.items()}, path)
    _fsync_paths(path)


def torch_load(path: str, tree: dict[str, np.ndarray]) -> dict[str, Any]:
    import torch

    return {k: v.numpy() for k, v in torch.load(path, weights_only=True).items()}


def flax_save(tree: dict[str, np.ndarray], path: str) -> None:
    from flax import serialization

    with open(path, "wb") as f:
        f.write(serialization.to_bytes(tree))
        f.flush()
        os.fsync(f.fileno())


def flax_load(path: str, tree: dict[str, np.ndarray]) -> dict[str, Any]:
    from flax import serialization

    with open(path, "rb") as f:
        return serialization.msgpack_restore(f.read())


def orbax_save(tree: dict[str, np.ndarray], path: str) -> None:
    import orbax.checkpoint as ocp

    ckptr = ocp.StandardCheckpointer()
    ckptr.save(os.path.abspath(path), tree)
    ckptr.wait_until_finished()
    ckptr.close()
    _fsync_paths(path)


def orbax_load(path: str, tree: dict[str, np.ndarray]) -> dict[str, Any]:
    import jax
    import orbax.checkpoint as ocp

    ckptr = ocp.StandardCheckpointer()
    target = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in tree.items()}
    out = ckptr.restore(os.path.abspath(path), target)
    jax.block_until_ready(out)
    ckptr.close()
    return out


Saver = Callable[[dict[str, np.ndarray], str], None]
Loader = Callable[[str, dict[str, np.ndarray]], Any]
# name: (save, load, per-key read or None)
METHODS: dict[str, tuple[Saver, Loader, Loader | None]] = {
    "raw write": (raw_save, raw_load, None),
    "jaxnets": (jaxnets_save, jaxnets_read, jaxnets_per_key),
    "jaxnets.load": (jaxnets_save_jax, jaxnets_load, None),
    "safetensors": (safetensors_save, safetensors_load, safetensors_per_key),
    "torch": (torch_save, torch_load, None),
    "flax msgpack": (flax_save, flax_load, None),
    "orbax": (orbax_save, orbax_load, None),
}
OPS = ("save", "load", "per-key")


def _check(name: str, out: Any, tree: dict[str, np.ndarray]) -> None:
    for k in (next(iter(tree)), next(reversed(tree))):
        if not np.array_equal(np.asarray(out[k]), tree[k]):
            raise AssertionError(f"{name}: wrong data for {k}")


def _measure(
    methods: list[str], tree: dict[str, np.ndarray], folder: str, repeat: int, cold: bool
) -> dict[str, dict[str, float]]:
    """``{method: {op: best seconds}}``, the methods interleaved repetition by repetition."""
    small = {k: v[:16] for k, v in list(tree.items())[:2]}
    if "jaxnets.load" in methods:
        _on_device(tree)  # the jax arrays exist before the timing, as a model's params do
    for name in methods:  # imports and first-call setup are not timed
        save, load, per_key = METHODS[name]
        warm = os.path.join(folder, "warmup")
        save(small, warm)
        load(warm, small)
        if per_key is not None:
            per_key(warm, small)
        shutil.rmtree(warm) if os.path.isdir(warm) else os.unlink(warm)
    best = {
        m: {op: float("inf") for op, fn in zip(OPS, METHODS[m]) if fn is not None} for m in methods
    }
    for r in range(repeat):
        for name in methods:
            save, load, per_key = METHODS[name]
            path = os.path.join(folder, f"{name.replace(' ', '_')}_{r}")
            for op, fn in (("save", save), ("load", load), ("per-key", per_key)):
                if fn is None:
                    continue
                if op != "save" and cold:
                    _evict(path)
                gc.collect()
                t = time.perf_counter()
                out = fn(tree, path) if op == "save" else fn(path, tree)
                best[name][op] = min(best[name][op], time.perf_counter() - t)
                if op != "save":
                    _check(f"{name} {op}", out, tree)
                del out
            shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
    return best


def _short(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def _goals(n: int, res: dict[str, dict[str, float]]) -> list[str]:
    j = res.get("jaxnets")
    if not j:
        return []
    lines = []
    if "raw write" in res:
        lines.append(
            f"save jaxnets / raw write = {j['save'] / res['raw write']['save']:.2f}x (goal <= 1.1)"
        )
    if "safetensors" in res:
        st = res["safetensors"]
        lines.append(
            f"load jaxnets / safetensors load_file = {j['load'] / st['load']:.2f}x (goal <= 1.0)"
        )
        goal = " (goal <= 1.5)" if n >= 2000 else ""
        lines.append(
            f"per-key jaxnets / safetensors get_tensor = {j['per-key'] / st['per-key']:.2f}x{goal}"
        )
    if "orbax" in res:
        o = res["orbax"]
        lines.append(f"orbax / jaxnets: save {o['save'] / j['save']:.1f}x, load {o['load'] / j['load']:.1f}x slower"
                     + (" (goal >= 20x on 2000 leaves)" if n == 2000 else ""))  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every total size")
    parser.add_argument("--repeat", type=int, default=1, help="best of N runs per method")
    parser.add_argument(
        "--cold", action="store_true", help="evict files from the page cache before loading"
    )
    parser.add_argument(
        "--only", default=None, help="only the cases with these numbers of leaves (e.g. 2000,20000)"
    )
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset")
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    parser.add_argument(
        "--no-json", dest="json", action="store_false", help="do not write bench/results/files.json"
    )
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {list(METHODS)}")
    only = None if args.only is None else {int(x) for x in args.only.split(",")}
    groups: dict[str, dict[str, float]] = {}
    print(f"model files: save, load and per-key reads, times in seconds, {'cold' if args.cold else 'warm'} "
          f"page cache, best of {args.repeat}; every save fsyncs. Sizes are TOTAL bytes per tree.")  # fmt: skip
    for n, total in CASES:
        if only is not None and n not in only:
            continue
        total = int(total * args.scale)
        tree = _tree(n, total)
        nbytes = sum(a.nbytes for a in tree.values())
        folder = tempfile.mkdtemp(prefix="jaxnets_bench_", dir=args.dir)
        try:
            results = _measure(methods, tree, folder, args.repeat, args.cold)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        for op in OPS:
            row = {m: r[op] for m, r in results.items() if op in r}
            if row:
                groups[f"{op}, {_short(n)}"] = row  # the chart's label: operation, leaves
        print(f"\n{n} leaves, {nbytes / MiB:.0f} MiB total")
        print(
            f"{'method':<14}{'save s':>9}{'load s':>9}{'per-key s':>11}{'save GB/s':>11}{'load GB/s':>11}"
        )
        for m, r in results.items():
            pk = f"{r['per-key']:>11.3f}" if "per-key" in r else f"{'-':>11}"
            print(f"{m:<14}{r['save']:>9.3f}{r['load']:>9.3f}{pk}"
                  f"{nbytes / r['save'] / 1e9:>11.2f}{nbytes / r['load'] / 1e9:>11.2f}")  # fmt: skip
        for line in _goals(n, results):
            print("  " + line)
        del tree
        _ON_DEVICE.clear()
        gc.collect()
    if args.json and groups:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from chart import write_results

        cache = "cold" if args.cold else "warm"
        title = (f"Model files by number of leaves: save (fsync), load, per-key reads ({cache}); "
                 f"sizes x{args.scale:g}")  # fmt: skip
        print("wrote", write_results("files", title, groups))


if __name__ == "__main__":
    main()
