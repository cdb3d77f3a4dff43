"""jaxnets.optim vs optax: the config wrapper must cost nothing once jitted.

Measures side by side, in one run (alternating every repeat), a jitted train step (update + apply_updates), an eager
update, and ``init``, for optax's optimizer and its jaxnets.optim config; prints the ratios
(jaxnets.optim / optax; 1.00 means no overhead), and whether the jitted steps lower to
identical HLO (then any jit-step difference is noise).

    .venv/bin/python bench/optim_overhead.py [--leaves 200] [--size 128] [--repeats 30]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import jax
import optax

from jaxnets import optim


def _best_pair(
    fns: tuple[Callable[[], Any], Callable[[], Any]], repeats: int
) -> tuple[float, float]:
    """Best time of each function, alternating them every repeat so both see the same load."""
    for fn in fns:
        jax.block_until_ready(fn())  # warm-up / compile
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            jax.block_until_ready(fn())
            best[i] = min(best[i], time.perf_counter() - t)
    return best[0], best[1]


def _step_fn(tx: Any) -> Any:
    def step(p: Any, s: Any, g: Any) -> Any:
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    return jax.jit(step)


def _measure(
    txs: tuple[Any, Any], measure: str, params: Any, grads: Any, repeats: int
) -> tuple[float, float]:
    states = [tx.init(params) for tx in txs]
    if measure == "jit step":
        steps = [_step_fn(tx) for tx in txs]
        fns = tuple((lambda f=f, s=s: f(params, s, grads)) for f, s in zip(steps, states))
        return _best_pair(fns, repeats)  # type: ignore[arg-type]
    few = max(3, repeats // 5)
    if measure == "eager update":
        fns = tuple((lambda tx=tx, s=s: tx.update(grads, s, params)) for tx, s in zip(txs, states))
        return _best_pair(fns, few)  # type: ignore[arg-type]
    return _best_pair(tuple((lambda tx=tx: tx.init(params)) for tx in txs), few)  # type: ignore[arg-type]


def _same_hlo(txs: tuple[Any, Any], params: Any, grads: Any) -> bool:
    state = txs[0].init(params)
    texts = [_step_fn(tx).lower(params, state, grads).as_text() for tx in txs]
    return texts[0] == texts[1]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--leaves", type=int, default=200, help="number of parameter arrays")
    ap.add_argument("--size", type=int, default=128, help="each array is (size, size)")
    ap.add_argument("--repeats", type=int, default=30)
    args, _ = ap.parse_known_args(argv)

    keys = jax.random.split(jax.random.key(0), args.leaves)
    params = {f"layer{i}": jax.random.normal(k, (args.size, args.size)) for i, k in enumerate(keys)}
    grads = jax.tree.map(lambda p: 0.1 * p, params)
    pairs = {
        "adamw": (optax.adamw(1e-3), optim.adamw(1e-3)),
        "clip+adam(cosine)": (
            optax.chain(
                optax.clip_by_global_norm(1.0), optax.adam(optax.cosine_decay_schedule(1e-3, 100))
            ),
            optim.chain(
                optim.clip_by_global_norm(1.0), optim.adam(optim.cosine_decay_schedule(1e-3, 100))
            ),
        ),
    }
    print(
        f"params: {args.leaves} arrays of ({args.size}, {args.size}) float32, best of {args.repeats}"
    )
    print(
        f"{'optimizer':<20} {'measure':<14} {'optax (ms)':>11} {'jaxnets (ms)':>13} {'ratio':>7} {'same HLO':>9}"
    )
    for name, txs in pairs.items():
        same = "yes" if _same_hlo(txs, params, grads) else "NO"
        for measure in ("jit step", "eager update", "init"):
            a, b = (t * 1e3 for t in _measure(txs, measure, params, grads, args.repeats))
            print(f"{name:<20} {measure:<14} {a:>11.3f} {b:>13.3f} {b / a:>7.2f} {same:>9}")


if __name__ == "__main__":
    main()
