"""Checkpoint save/restore speed: jaxnets.CheckpointManager vs plain orbax, side by side.

Trees (sizes are TOTAL bytes of the tree, float32 leaves; ``--scale`` multiplies them):

* ``16 leaves x 256 MiB``: 16 leaves of 16 MiB;
* ``2000 leaves x 64 MiB``: 2,000 leaves of 32 KiB (orbax's per-leaf cost dominates).

Plain orbax is ``ocp.StandardCheckpointer()`` with default settings: ``save`` then
``wait_until_finished``; restore with an abstract tree. jaxnets is ``CheckpointManager`` with
``async_save=False`` for save timings, restore with no template. The async stall is how long
``save()`` blocks the training loop with ``async_save=True``, over a synchronous save.

Run: ``python bench/checkpoints.py [--scale 1.0] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp


def _tree(n_leaves: int, total_bytes: int) -> dict[str, jax.Array]:
    per = max(1, total_bytes // (4 * n_leaves))
    return {f"layer{i}": {"w": jnp.full((per,), float(i), jnp.float32)} for i in range(n_leaves)}


def _median(fn: Callable[[int], float], repeat: int) -> float:
    return statistics.median(fn(i) for i in range(repeat))


def _bench_case(name: str, tree: dict, root: Path, repeat: int) -> list[tuple[str, float, float]]:
    import orbax.checkpoint as ocp

    from jaxnets.checkpoint import CheckpointManager

    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
    jax.block_until_ready(tree)

    def orbax_save(i: int) -> float:
        path = root / f"orbax{i}"
        ck = ocp.StandardCheckpointer()
        t = time.perf_counter()
        ck.save(path, tree)
        ck.wait_until_finished()
        dt = time.perf_counter() - t
        ck.close()
        return dt

    def orbax_restore(i: int) -> float:
        ck = ocp.StandardCheckpointer()
        t = time.perf_counter()
        out = ck.restore(root / "orbax0", abstract)
        jax.block_until_ready(out)
        dt = time.perf_counter() - t
        ck.close()
        return dt

    def jn_save(i: int, async_save: bool = False) -> float:
        mgr = CheckpointManager(root / f"jn{int(async_save)}_{i}", async_save=async_save)
        t = time.perf_counter()
        mgr.save(0, params=tree)
        dt = time.perf_counter() - t
        mgr.close()
        return dt

    def jn_restore(i: int) -> float:
        mgr = CheckpointManager(root / "jn0_0")
        t = time.perf_counter()
        out = mgr.restore(0)
        jax.block_until_ready(out.params)
        dt = time.perf_counter() - t
        mgr.close()
        return dt

    o_save, j_save = _median(orbax_save, repeat), _median(jn_save, repeat)
    o_rest, j_rest = _median(orbax_restore, repeat), _median(jn_restore, repeat)
    stall = _median(lambda i: jn_save(i, True), repeat)
    return [
        (f"{name}: save", o_save, j_save),
        (f"{name}: restore", o_rest, j_rest),
        (f"{name}: async stall vs sync save", j_save, stall),
    ]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the tree sizes")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    mib = 1 << 20
    cases = [
        ("16 leaves x 256 MiB", 16, int(256 * mib * args.scale)),
        ("2000 leaves x 64 MiB", 2000, int(64 * mib * args.scale)),
    ]
    rows = []
    for name, n, total in cases:
        root = Path(tempfile.mkdtemp(prefix="jaxnets-bench-ckpt-"))
        try:
            rows += _bench_case(name, _tree(n, total), root, args.repeat)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    print(f"{'case':<46} {'orbax / sync s':>14} {'jaxnets s':>10} {'ratio':>8}")
    for label, base, ours in rows:
        if "stall" in label:
            print(f"{label:<46} {base:>14.3f} {ours:>10.3f} {ours / base:>7.1%}")
        else:
            print(f"{label:<46} {base:>14.3f} {ours:>10.3f} {base / ours:>7.2f}x")
    print("ratio: orbax time / jaxnets time (higher is better); stall: async save() / sync save.")


if __name__ == "__main__":
    main()
