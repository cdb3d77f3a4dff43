"""Checkpoint save/restore speed: jaxnets.CheckpointManager vs plain orbax, side by side.

Trees (sizes are TOTAL bytes of the tree, float32 leaves; ``--scale`` multiplies them):

* ``16 leaves x 256 MiB``: 16 leaves of 16 MiB;
* ``2000 leaves x 64 MiB``: 2,000 leaves of 32 KiB (orbax's per-leaf cost dominates).

Plain orbax is ``ocp.StandardCheckpointer()`` with default settings (async): ``save`` then
``wait_until_finished``; restore with an abstract tree. jaxnets is ``CheckpointManager`` with
defaults (async) — ``save`` then ``wait`` — and also with ``async_save=False``; restore with no
template. Both are warmed up by one save first, as in a training loop. The stall is how long
``save()`` blocks the training loop; the goal is <= 10% of a synchronous save.

Run: ``python bench/checkpoints.py [--scale 1.0] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp


def _tree(n_leaves: int, total_bytes: int) -> dict[str, jax.Array]:
    per = max(1, total_bytes // (4 * n_leaves))
    return {f"layer{i}": {"w": jnp.full((per,), float(i), jnp.float32)} for i in range(n_leaves)}


def _short(label: str) -> str:
    """A chart label: ``"save\n16 leaves"`` for ``"16 leaves x 256 MiB: save + wait (...)"``."""
    tree, op = label.split(": ", 1)
    op = {"save + wait (defaults, async)": "save", "async save() stall": "save() stall"}.get(op, op)
    return f"{op}\n{tree.split(' x ')[0]}"


def _bench_case(name: str, tree: dict, root: Path, repeat: int) -> list[tuple[str, float, float]]:
    import orbax.checkpoint as ocp

    from jaxnets.checkpoint import CheckpointManager

    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
    jax.block_until_ready(tree)
    # Everything warmed up by one save first (a training loop saves the same tree many times),
    # and the contenders interleaved so that load from other processes hits them alike.
    ck = ocp.StandardCheckpointer()  # plain orbax, default settings (async)
    jn_async = CheckpointManager(root / "jn_async")
    jn_sync = CheckpointManager(root / "jn_sync", async_save=False)
    ck.save(root / "orbax_warm", tree)
    ck.wait_until_finished()
    for mgr in (jn_async, jn_sync):
        mgr.save(0, params=tree)
        mgr.wait()
    t_: dict[str, list[float]] = {
        k: [] for k in ("o_save", "o_stall", "j_save", "j_stall", "j_sync")
    }
    for i in range(repeat):
        t = time.perf_counter()
        ck.save(root / f"orbax{i}", tree)
        t_["o_stall"].append(time.perf_counter() - t)
        ck.wait_until_finished()
        t_["o_save"].append(time.perf_counter() - t)
        t = time.perf_counter()
        jn_async.save(i + 1, params=tree)
        t_["j_stall"].append(time.perf_counter() - t)
        jn_async.wait()
        t_["j_save"].append(time.perf_counter() - t)
        t = time.perf_counter()
        jn_sync.save(i + 1, params=tree)
        t_["j_sync"].append(time.perf_counter() - t)
    o_rest, j_rest = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        jax.block_until_ready(ck.restore(root / "orbax0", abstract))
        o_rest.append(time.perf_counter() - t)
        t = time.perf_counter()
        jax.block_until_ready(jn_async.restore(1).params)
        j_rest.append(time.perf_counter() - t)
    ck.close()
    jn_async.close()
    jn_sync.close()
    med = {k: statistics.median(v) for k, v in t_.items()}
    return [
        (f"{name}: save + wait (defaults, async)", med["o_save"], med["j_save"]),
        (f"{name}: save, jaxnets async_save=False", med["o_save"], med["j_sync"]),
        (f"{name}: restore", statistics.median(o_rest), statistics.median(j_rest)),
        (f"{name}: async save() stall", med["o_stall"], med["j_stall"]),
        (f"{name}: jaxnets stall / jaxnets sync save", med["j_sync"], med["j_stall"]),
        (f"{name}: orbax stall / orbax save + wait", med["o_save"], med["o_stall"]),
    ]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the tree sizes")
    ap.add_argument("--repeat", type=int, default=5)
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
    print(f"{'case':<52} {'orbax s':>10} {'jaxnets s':>10} {'ratio':>8}")
    for label, base, ours in rows:
        if " / " in label:
            print(f"{label:<52} {base:>10.3f} {ours:>10.3f} {ours / base:>8.1%}")
        else:
            print(f"{label:<52} {base:>10.3f} {ours:>10.3f} {base / ours:>7.2f}x")
    try:  # the panel in docs/benchmarks.png (bench/chart.py is the lead's; optional here)
        import sys

        sys.path.insert(0, str(Path(__file__).parent))
        from chart import write_results

        write_results(
            "checkpoints",
            "Checkpoints: seconds (orbax StandardCheckpointer vs jaxnets CheckpointManager)",
            {
                _short(label): {"orbax": base, "jaxnets": ours}
                for label, base, ours in rows
                if " / " not in label and "async_save=False" not in label
            },
        )
    except ImportError:
        pass
    print(
        "ratio: orbax time / jaxnets time (higher is better). 'X / Y' rows: seconds of Y, "
        "seconds of X, X as a share of Y (the stall goal is <= 10%)."
    )


if __name__ == "__main__":
    main()
