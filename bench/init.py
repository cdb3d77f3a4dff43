"""Cold ``init`` of ResNet-18: jaxnets (eager and jit) against flax.linen (eager and jit) and torch.

Every measurement runs in a fresh Python process, so nothing is compiled or cached beforehand
(jax's persistent compilation cache stays off, as it is by default): what a user's script pays
the first time it builds the model. Timed per process, after ``import``: creating the key (and,
for flax, the sample input its ``init`` needs) and ``init`` until the arrays are ready.

* jaxnets: ``jaxnets.models.resnet18().init(jax.random.key(0))``; jit: ``jax.jit(model.init)``.
* flax.linen: the same network (torchvision's ResNet-18 layout, NHWC, 11.7M params), written
  below as flax users write it; ``model.init(key, jnp.ones((1, 224, 224, 3)))`` and its jit.
* torch: ``torchvision.models.resnet18()`` when torchvision imports (reported as skipped when not).

The rounds alternate the order of the contenders so machine load hits all alike; reported: the
median over rounds, and jaxnets eager / flax.linen eager (goal <= 0.2, and <= 2 s absolute).

Run: ``python bench/init.py [--rounds 3] [--only jaxnets]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

CONTENDERS = ("jaxnets eager", "jaxnets jit", "flax.linen eager", "flax.linen jit", "torchvision")

_FLAX_RESNET18 = '''
import flax.linen as fnn

class Block(fnn.Module):
    filters: int
    strides: int = 1

    @fnn.compact
    def __call__(self, x, train=False):
        y = fnn.Conv(self.filters, (3, 3), self.strides, padding=1, use_bias=False)(x)
        y = fnn.relu(fnn.BatchNorm(use_running_average=not train)(y))
        y = fnn.Conv(self.filters, (3, 3), padding=1, use_bias=False)(y)
        y = fnn.BatchNorm(use_running_average=not train)(y)
        if x.shape != y.shape:
            x = fnn.Conv(self.filters, (1, 1), self.strides, use_bias=False)(x)
            x = fnn.BatchNorm(use_running_average=not train)(x)
        return fnn.relu(x + y)

class ResNet18(fnn.Module):
    num_classes: int = 1000

    @fnn.compact
    def __call__(self, x, train=False):
        x = fnn.Conv(64, (7, 7), 2, padding=3, use_bias=False)(x)
        x = fnn.relu(fnn.BatchNorm(use_running_average=not train)(x))
        x = fnn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        for i, filters in enumerate((64, 128, 256, 512)):
            x = Block(filters, 1 if i == 0 else 2)(x, train)
            x = Block(filters)(x, train)
        return fnn.Dense(self.num_classes)(x.mean(axis=(1, 2)))
'''


def _child(kind: str) -> dict[str, float | str]:
    """Runs in the fresh process: imports, then times one cold init."""
    t0 = time.perf_counter()
    if kind == "torchvision":
        try:
            import torchvision
        except Exception as e:  # its PyPI wheel is a CUDA build that fails on the CPU torch
            return {"skipped": f"{type(e).__name__}: {str(e).splitlines()[0][:100]}"}
        t1 = time.perf_counter()
        model = torchvision.models.resnet18()
        n = sum(p.numel() for p in model.parameters())
        return {"import_s": t1 - t0, "init_s": time.perf_counter() - t1, "params": n}
    import jax
    import jax.numpy as jnp

    if kind.startswith("jaxnets"):
        sys.path.insert(0, str(ROOT))
        import jaxnets

        model = jaxnets.models.resnet18()
        t1 = time.perf_counter()
        init = jax.jit(model.init) if kind.endswith("jit") else model.init
        params, state = init(jax.random.key(0))
        jax.block_until_ready((params, state))
        t2 = time.perf_counter()
    else:
        scope: dict[str, object] = {}
        exec(_FLAX_RESNET18, scope)  # the flax model's code, kept as text so jaxnets runs import no flax
        model = scope["ResNet18"]()  # type: ignore[operator]
        t1 = time.perf_counter()
        x = jnp.ones((1, 224, 224, 3))
        init = jax.jit(model.init) if kind.endswith("jit") else model.init
        variables = init(jax.random.key(0), x)
        jax.block_until_ready(variables)
        t2 = time.perf_counter()
        params = variables["params"]  # the count leaves out batch_stats, as jaxnets' leaves out state
    n = sum(int(a.size) for a in jax.tree.leaves(params))
    return {"import_s": t1 - t0, "init_s": t2 - t1, "params": n}


def _cold(kind: str, timeout: float) -> dict[str, float | str]:
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", kind],
        capture_output=True, text=True, timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", choices=["jaxnets", "flax", "torch"], default=None)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per cold process")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args, _ = ap.parse_known_args(argv)  # make bench passes its own arguments to every script
    if args.child:
        print(json.dumps(_child(args.child)))
        return 0
    only = {"jaxnets": "jaxnets", "flax": "flax", "torch": "torchvision"}.get(args.only or "", "")
    kinds = [k for k in CONTENDERS if k.startswith(only)]
    runs: dict[str, list[dict[str, float | str]]] = {k: [] for k in kinds}
    for r in range(args.rounds):
        for kind in kinds if r % 2 == 0 else kinds[::-1]:
            if runs[kind] and "skipped" in runs[kind][0]:
                continue
            runs[kind].append(_cold(kind, args.timeout))
    print(f"ResNet-18, cold init in a fresh process, median of {args.rounds} rounds")
    print(f"{'':<18} {'init s':>8} {'import s':>9} {'params':>11}")
    medians: dict[str, float] = {}
    for kind in kinds:
        rows = runs[kind]
        if rows and "skipped" in rows[0]:
            print(f"{kind:<18} skipped ({rows[0]['skipped']})")
            continue
        medians[kind] = statistics.median(float(x["init_s"]) for x in rows)
        imp = statistics.median(float(x["import_s"]) for x in rows)
        print(f"{kind:<18} {medians[kind]:>8.2f} {imp:>9.2f} {int(rows[0]['params']):>11,}")
    if "jaxnets eager" in medians and "flax.linen eager" in medians:
        ratio = medians["jaxnets eager"] / medians["flax.linen eager"]
        ok = medians["jaxnets eager"] <= 2.0 and ratio <= 0.2
        print(f"jaxnets eager / flax.linen eager: {ratio:.3f} (goals <= 0.2 and <= 2 s: "
              f"{'met' if ok else 'NOT met'})")
        if "jaxnets jit" in medians and "flax.linen jit" in medians:
            print(f"jaxnets jit / flax.linen jit: {medians['jaxnets jit'] / medians['flax.linen jit']:.3f}")
        try:  # a panel of docs/benchmarks.png
            sys.path.insert(0, str(HERE))
            from chart import write_results

            write_results(
                "init",
                "Cold init of ResNet-18 in a fresh process (seconds)",
                {
                    "eager": {"jaxnets": medians["jaxnets eager"], "flax.linen": medians["flax.linen eager"]},
                    "jit": {"jaxnets": medians.get("jaxnets jit", float("nan")),
                            "flax.linen": medians.get("flax.linen jit", float("nan"))},
                },
            )
        except ImportError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
