"""Model-file speed: jaxnets.save_state_dict / read against raw writes, safetensors, torch, flax, orbax.

Trees of float32 numpy arrays in three shapes, read as TOTAL sizes (the issue's "16 leaves x 256 MiB,
64 x 1 GiB, 2000 x 64 MiB" do not fit a 24 GiB, 2-core machine as per-leaf sizes):

* 16 leaves totalling 256 MiB, 64 leaves totalling 1 GiB, 2000 leaves totalling 64 MiB;
* ``--scale`` multiplies every total (``--scale 0.1`` for a quick run).

Fairness: every saver is followed by an ``fsync`` of every file it wrote (jaxnets and the raw write
fsync themselves; safetensors, torch, flax and orbax get an explicit fsync pass inside the timing).
Loads are *warm* (the file was just written and is in the page cache; dropping the cache needs
root) unless ``--cold``, which evicts each method's files with ``posix_fadvise(DONTNEED)`` first.
Every load produces numpy arrays (jaxnets: ``Reader.read_all``, checksums verified; orbax: its
restored arrays) except the ``jaxnets.load`` row, which also puts them on the default jax device.

Run: ``python bench/files.py [--scale S] [--cold] [--repeat N] [--only 2000]``.
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
CASES = [(16, 256 * MiB), (64, 1024 * MiB), (2000, 64 * MiB)]


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
    with open(path, "wb", buffering=0) as f:
        for a in tree.values():
            f.write(memoryview(a.reshape(-1).view(np.uint8)))
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


METHODS: dict[str, tuple[Callable[..., None], Callable[..., Any]]] = {
    "raw write": (raw_save, raw_load),
    "jaxnets": (jaxnets_save, jaxnets_read),
    "jaxnets.load": (jaxnets_save, jaxnets_load),
    "safetensors": (safetensors_save, safetensors_load),
    "torch": (torch_save, torch_load),
    "flax msgpack": (flax_save, flax_load),
    "orbax": (orbax_save, orbax_load),
}


def _measure(
    name: str, tree: dict[str, np.ndarray], folder: str, repeat: int, cold: bool
) -> tuple[float, float]:
    save, load = METHODS[name]
    warm = os.path.join(folder, "warmup")  # imports and first-call setup are not timed
    small = {k: v[:16] for k, v in list(tree.items())[:2]}
    save(small, warm)
    load(warm, small)
    shutil.rmtree(warm) if os.path.isdir(warm) else os.unlink(warm)
    best_s = best_l = float("inf")
    for r in range(repeat):
        path = os.path.join(folder, f"{name.replace(' ', '_')}_{r}")
        gc.collect()
        t = time.perf_counter()
        save(tree, path)
        best_s = min(best_s, time.perf_counter() - t)
        if cold:
            _evict(path)
        gc.collect()
        t = time.perf_counter()
        out = load(path, tree)
        best_l = min(best_l, time.perf_counter() - t)
        k = next(iter(tree))
        if not np.array_equal(np.asarray(out[k]), tree[k]):
            raise AssertionError(f"{name}: wrong data for {k}")
        del out
        shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
    return best_s, best_l


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every total size")
    parser.add_argument("--repeat", type=int, default=1, help="best of N runs per method")
    parser.add_argument(
        "--cold", action="store_true", help="evict files from the page cache before loading"
    )
    parser.add_argument(
        "--only", type=int, default=None, help="only the case with this many leaves"
    )
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset")
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    parser.add_argument(
        "--no-json", dest="json", action="store_false", help="do not write bench/results/files.json"
    )
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    groups: dict[str, dict[str, float]] = {}
    print(f"model files: save and load, times in seconds, {'cold' if args.cold else 'warm'} page cache, "
          f"best of {args.repeat}; every save fsyncs. Sizes are TOTAL bytes per tree.")  # fmt: skip
    for n, total in CASES:
        if args.only is not None and n != args.only:
            continue
        total = int(total * args.scale)
        tree = _tree(n, total)
        nbytes = sum(a.nbytes for a in tree.values())
        folder = tempfile.mkdtemp(prefix="jaxnets_bench_", dir=args.dir)
        try:
            results = {m: _measure(m, tree, folder, args.repeat, args.cold) for m in methods}
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        groups[f"save, {n} leaves"] = {m: r[0] for m, r in results.items()}
        groups[f"load, {n} leaves"] = {m: r[1] for m, r in results.items()}
        print(f"\n{n} leaves, {nbytes / MiB:.0f} MiB total")
        print(f"{'method':<14}{'save s':>9}{'load s':>9}{'save GB/s':>11}{'load GB/s':>11}")
        for m, (s, lo) in results.items():
            print(f"{m:<14}{s:>9.3f}{lo:>9.3f}{nbytes / s / 1e9:>11.2f}{nbytes / lo / 1e9:>11.2f}")
        j = results.get("jaxnets")
        if j:
            lines = []
            if "raw write" in results:
                lines.append(
                    f"save jaxnets / raw write = {j[0] / results['raw write'][0]:.2f}x (goal <= 1.1)"
                )
            if "safetensors" in results:
                lines.append(
                    f"load jaxnets / safetensors = {j[1] / results['safetensors'][1]:.2f}x (goal <= 1.0)"
                )
            if "orbax" in results:
                o = results["orbax"]
                lines.append(f"orbax / jaxnets: save {o[0] / j[0]:.1f}x, load {o[1] / j[1]:.1f}x slower"
                             + (" (goal >= 20x on 2000 leaves)" if n == 2000 else ""))  # fmt: skip
            for line in lines:
                print("  " + line)
        del tree
        gc.collect()
    if args.json and groups:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from chart import write_results

        cache = "cold" if args.cold else "warm"
        title = f"Model files: save (fsync) and load ({cache}), seconds; sizes are tree totals x{args.scale:g}"
        print("wrote", write_results("files", title, groups))


if __name__ == "__main__":
    main()
