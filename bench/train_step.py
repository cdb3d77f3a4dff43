"""Train-step time: jaxnets vs flax.linen, same models, data, batch size and optax adam.

Each step is one jit-compiled call: forward, cross-entropy loss, grad, ``optax.adam`` update
(and, for the CNN, the BatchNorm running statistics threaded through). Both libraries' steps
are timed in interleaved rounds (so load on a shared machine hits both alike); a round runs
``--steps`` steps and blocks on the result. Reported: median per-step time over the rounds,
and the ratio jaxnets/flax (goal: <= 1.05).

Layouts: jaxnets is PyTorch-shaped (NCHW activations, OIHW kernels, via
``lax.conv_general_dilated`` dimension numbers); flax.linen's Conv is NHWC/HWIO. The CNN is
timed against flax twice: fed the same images already in NHWC (flax's native layout, the
headline ratio), and fed the NCHW images with the transpose inside its step (what a flax user
with torch-layout data runs). On CPU, XLA's NCHW convolutions are slower than NHWC ones, so the
first ratio is above 1 there; see docs/benchmarks.md.

Usage: ``python bench/train_step.py [--steps 50] [--rounds 7] [--batch 128] [--only mlp|cnn]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flax.linen as fnn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from jaxnets import nn  # noqa: E402

# ---- the models, twice ------------------------------------------------------------------------
MLP_SIZES = (784, 512, 512, 10)


def jaxnets_mlp() -> nn.Module:
    a, b, c, d = MLP_SIZES
    return nn.Sequential(nn.Linear(a, b), nn.ReLU(), nn.Linear(b, c), nn.ReLU(), nn.Linear(c, d))


class FlaxMLP(fnn.Module):
    @fnn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        _, b, c, d = MLP_SIZES
        x = fnn.relu(fnn.Dense(b)(x))
        x = fnn.relu(fnn.Dense(c)(x))
        return fnn.Dense(d)(x)


def jaxnets_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    )


class FlaxCNN(fnn.Module):
    nchw_input: bool = False  # True: takes torch-layout images and transposes them in the step

    @fnn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.nchw_input:
            x = jnp.transpose(x, (0, 2, 3, 1))
        for i, c in enumerate((32, 64, 64)):
            x = fnn.Conv(c, (3, 3), padding=1)(x)
            # torch's momentum 0.1 is flax's 0.9; eps as torch
            x = fnn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x)
            x = fnn.relu(x)
            if i < 2:
                x = fnn.max_pool(x, (2, 2), (2, 2))
        x = jnp.mean(x, axis=(1, 2))
        return fnn.Dense(10)(x)


# ---- the steps --------------------------------------------------------------------------------
def _loss(logits: jax.Array, y: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def jaxnets_step(model: nn.Module, opt: optax.GradientTransformation) -> Callable[..., Any]:
    def loss_fn(p: Any, s: Any, x: jax.Array, y: jax.Array) -> Any:
        logits, s = model.apply(p, s, x, train=True)
        return _loss(logits, y), s

    @jax.jit
    def step(carry: Any, x: jax.Array, y: jax.Array) -> Any:
        p, s, o = carry
        (loss, s), g = jax.value_and_grad(loss_fn, has_aux=True)(p, s, x, y)
        u, o = opt.update(g, o, p)
        return (optax.apply_updates(p, u), s, o), loss

    return step


def flax_step(model: fnn.Module, opt: optax.GradientTransformation) -> Callable[..., Any]:
    def loss_fn(p: Any, s: Any, x: jax.Array, y: jax.Array) -> Any:
        if s:
            logits, upd = model.apply({"params": p, **s}, x, train=True, mutable=list(s))
            return _loss(logits, y), upd
        return _loss(model.apply({"params": p}, x, train=True), y), s

    @jax.jit
    def step(carry: Any, x: jax.Array, y: jax.Array) -> Any:
        p, s, o = carry
        (loss, s), g = jax.value_and_grad(loss_fn, has_aux=True)(p, s, x, y)
        u, o = opt.update(g, o, p)
        return (optax.apply_updates(p, u), s, o), loss

    return step


def _time(
    step: Callable[..., Any], carry: Any, x: jax.Array, y: jax.Array, steps: int
) -> tuple[float, Any]:
    t0 = time.perf_counter()
    for _ in range(steps):
        carry, loss = step(carry, x, y)
    jax.block_until_ready((carry, loss))
    return (time.perf_counter() - t0) / steps, carry


def bench_case(name: str, batch: int, steps: int, rounds: int, warmup: int) -> dict[str, float]:
    """Median ms per step of jaxnets, flax (native layout) and, for the CNN, flax fed NCHW."""
    k = jax.random.key(0)
    kx, ky = jax.random.split(k)
    opt = optax.adam(1e-3)
    y = jax.random.randint(ky, (batch,), 0, 10)
    if name == "mlp":
        x = jax.random.normal(kx, (batch, MLP_SIZES[0]))
        jmodel: nn.Module = jaxnets_mlp()
        flax_models = {"flax": (FlaxMLP(), x)}
    else:
        x = jax.random.normal(kx, (batch, 3, 32, 32))
        jmodel = jaxnets_cnn()
        flax_models = {
            "flax": (FlaxCNN(), jnp.transpose(x, (0, 2, 3, 1))),  # the same images, NHWC, once
            "flax_nchw": (FlaxCNN(nchw_input=True), x),
        }

    p, s = jmodel.init(k)
    runs: dict[str, list[Any]] = {"jaxnets": [jaxnets_step(jmodel, opt), (p, s, opt.init(p)), x]}
    for label, (fmodel, fx) in flax_models.items():
        variables = fmodel.init(k, fx)
        fp = variables["params"]
        fs = {c: v for c, v in variables.items() if c != "params"}
        runs[label] = [flax_step(fmodel, opt), (fp, fs, opt.init(fp)), fx]

    times: dict[str, list[float]] = {label: [] for label in runs}
    for r in range(warmup + rounds):  # interleaved: load on a shared machine hits all alike
        for label, run in runs.items():
            step, carry, data = run
            t, run[1] = _time(step, carry, data, y, 1 if r < warmup else steps)
            if r >= warmup:
                times[label].append(t)
    out = {f"{label}_ms": 1e3 * statistics.median(ts) for label, ts in times.items()}
    out["ratio"] = out["jaxnets_ms"] / out["flax_ms"]
    if "flax_nchw_ms" in out:
        out["ratio_nchw"] = out["jaxnets_ms"] / out["flax_nchw_ms"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=50, help="steps per timed round")
    parser.add_argument(
        "--rounds", type=int, default=7, help="interleaved rounds per library (median)"
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--only", choices=("mlp", "cnn"), default=None)
    args, _ = parser.parse_known_args(argv)  # bench/run_all.py may pass flags meant for others

    print(
        f"backend: {jax.default_backend()} ({jax.devices()[0].device_kind}), batch {args.batch}, "
        f"{args.rounds} rounds x {args.steps} steps, median per step"
    )
    print(f"{'model':<22} {'jaxnets ms':>11} {'flax ms':>9} {'jaxnets/flax':>13}")
    for name in ("mlp", "cnn"):
        if args.only and name != args.only:
            continue
        r = bench_case(name, args.batch, args.steps, args.rounds, args.warmup)
        label = "mlp" if name == "mlp" else "cnn (flax NHWC data)"
        print(
            f"{label:<22} {r['jaxnets_ms']:>11.3f} {r['flax_ms']:>9.3f} {r['ratio']:>12.3f}x",
            flush=True,
        )
        if "flax_nchw_ms" in r:
            print(
                f"{'cnn (flax NCHW data)':<22} {r['jaxnets_ms']:>11.3f} {r['flax_nchw_ms']:>9.3f} "
                f"{r['ratio_nchw']:>12.3f}x",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
