"""Train-step time: jaxnets vs flax.linen (and torch eager for reference), same models and data.

Each jax step is one jit-compiled call: forward, cross-entropy loss, grad, ``optax.adam`` update
(and, for the CNN and ResNet-18, the BatchNorm running statistics threaded through). All
contenders are timed in interleaved rounds (so load on a shared machine hits them alike); a round
runs ``--steps`` steps and blocks on the result, after ``--warmup`` untimed rounds of one step
(compilation); the order of the contenders alternates from round to round. Reported: median
per-step wall time over the rounds, and the ratio jaxnets/flax (goal: <= 1.05); below each row,
two figures less disturbed by other processes on a shared machine: the best round's wall time and
the median CPU time of this process per step (``time.process_time``, all threads).

Models:

* ``mlp``: 784-512-512-10, batch ``--batch``;
* ``cnn``: 3 x conv/BatchNorm/ReLU, 2 max-pools, adaptive avg-pool, 32x32 images, batch ``--batch``;
* ``resnet18``: ``jaxnets.models.resnet18(num_classes=10)`` against the same network in flax.linen
  (bench/_resnet.py), batch ``--resnet-batch``, one row per ``--resnet-sizes`` image size (small:
  the whole bench runs in a few minutes on 2 cores); torch eager (``torch.optim.Adam``,
  ``model.train()``, a torchvision-style ResNet-18 in bench/_resnet.py) is a reference line.

Layouts: jaxnets is PyTorch-shaped (NCHW activations, OIHW kernels, via
``lax.conv_general_dilated`` dimension numbers); flax.linen's Conv is NHWC/HWIO. The CNN and
ResNet-18 are timed against flax twice: fed the same images already in NHWC (flax's native layout,
the headline ratio), and fed the NCHW images with the transpose inside its step (what a flax user
with torch-layout data runs). See docs/benchmarks.md for what the layouts cost on a CPU.

Writes bench/results/train_step.json (a panel of docs/benchmarks.png).

Usage: ``python bench/train_step.py [--steps 5] [--rounds 7] [--batch 128] [--resnet-batch 16]
[--resnet-sizes 32,64] [--resnet-steps 1] [--resnet-rounds 11] [--only mlp|cnn|resnet18]
[--no-torch] [--json PATH | --no-json]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import flax.linen as fnn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from _resnet import flax_resnet18, torch_resnet18  # noqa: E402

import jaxnets  # noqa: E402
from jaxnets import nn  # noqa: E402

CLASSES = 10
LABELS = {  # result key -> the library's name in the table and the chart
    "jaxnets": "jaxnets",
    "flax": "flax.linen",
    "flax_nchw": "flax.linen, NCHW data",
    "torch": "torch eager",
}

# ---- the small models, twice ------------------------------------------------------------------
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
# Runs n steps (blocking on the result); returns seconds per step: (wall, CPU of this process).
Runner = Callable[[int], tuple[float, float]]


def _loss(logits: jax.Array, y: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _jit_step(loss_fn: Callable[..., Any], opt: optax.GradientTransformation) -> Callable[..., Any]:
    @jax.jit
    def step(carry: Any, x: jax.Array, y: jax.Array) -> Any:
        p, s, o = carry
        (loss, s), g = jax.value_and_grad(loss_fn, has_aux=True)(p, s, x, y)
        u, o = opt.update(g, o, p)
        return (optax.apply_updates(p, u), s, o), loss

    return step


def jaxnets_step(model: nn.Module, opt: optax.GradientTransformation) -> Callable[..., Any]:
    def loss_fn(p: Any, s: Any, x: jax.Array, y: jax.Array) -> Any:
        logits, s = model.apply(p, s, x, train=True)
        return _loss(logits, y), s

    return _jit_step(loss_fn, opt)


def flax_step(model: fnn.Module, opt: optax.GradientTransformation) -> Callable[..., Any]:
    def loss_fn(p: Any, s: Any, x: jax.Array, y: jax.Array) -> Any:
        if s:
            logits, upd = model.apply({"params": p, **s}, x, train=True, mutable=list(s))
            return _loss(logits, y), upd
        return _loss(model.apply({"params": p}, x, train=True), y), s

    return _jit_step(loss_fn, opt)


def jax_runner(step: Callable[..., Any], carry: Any, x: jax.Array, y: jax.Array) -> Runner:
    state = [carry]

    def run(steps: int) -> tuple[float, float]:
        carry = state[0]
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            carry, loss = step(carry, x, y)
        jax.block_until_ready((carry, loss))
        state[0] = carry
        return (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps

    return run


def torch_runner(x: np.ndarray, y: np.ndarray) -> Runner:
    """torch eager ResNet-18 step: forward, cross-entropy, backward, ``torch.optim.Adam``."""
    import torch

    model = torch_resnet18(CLASSES).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    tx, ty = torch.from_numpy(x.copy()), torch.from_numpy(y.astype(np.int64))

    def run(steps: int) -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(tx), ty)
            loss.backward()
            opt.step()
        loss.detach().item()  # blocks on the step (eager: already done)
        return (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps

    return run


def _flax_runner(fmodel: fnn.Module, opt: optax.GradientTransformation, k: jax.Array,
                 x: jax.Array, y: jax.Array) -> Runner:
    variables = fmodel.init(k, x)
    fp = variables["params"]
    fs = {c: v for c, v in variables.items() if c != "params"}
    return jax_runner(flax_step(fmodel, opt), (fp, fs, opt.init(fp)), x, y)


def runners(name: str, batch: int, size: int, torch: bool) -> dict[str, Runner]:
    """The contenders for one model, keyed as :data:`LABELS`."""
    k = jax.random.key(0)
    kx, ky = jax.random.split(k)
    opt = optax.adam(1e-3)
    y = jax.random.randint(ky, (batch,), 0, CLASSES)
    if name == "mlp":
        x = jax.random.normal(kx, (batch, MLP_SIZES[0]))
        jmodel: nn.Module = jaxnets_mlp()
        flax_models = {"flax": (FlaxMLP(), x)}
    else:
        x = jax.random.normal(kx, (batch, 3, size, size))
        nhwc = jnp.transpose(x, (0, 2, 3, 1))  # the same images, NHWC, once
        if name == "cnn":
            jmodel = jaxnets_cnn()
            flax_models = {"flax": (FlaxCNN(), nhwc), "flax_nchw": (FlaxCNN(nchw_input=True), x)}
        else:
            jmodel = jaxnets.models.resnet18(num_classes=CLASSES)
            flax_models = {
                "flax": (flax_resnet18(CLASSES), nhwc),
                "flax_nchw": (flax_resnet18(CLASSES, nchw_input=True), x),
            }
    p, s = jmodel.init(k)
    out = {"jaxnets": jax_runner(jaxnets_step(jmodel, opt), (p, s, opt.init(p)), x, y)}
    for label, (fmodel, fx) in flax_models.items():
        out[label] = _flax_runner(fmodel, opt, k, fx, y)
    if torch and name == "resnet18":
        out["torch"] = torch_runner(np.asarray(x), np.asarray(y))
    return out


def bench_case(
    name: str, batch: int, size: int, steps: int, rounds: int, warmup: int, torch: bool = True
) -> dict[str, float]:
    """Per step, ms: each contender's median wall time (``{label}_ms``), best wall time
    (``{label}_best_ms``) and median CPU time of this process (``{label}_cpu_ms``), and the
    ratio of the medians jaxnets / each (``ratio_{label}``)."""
    runs = runners(name, batch, size, torch)
    times: dict[str, list[tuple[float, float]]] = {label: [] for label in runs}
    order = list(runs)
    for r in range(warmup + rounds):  # interleaved: load on a shared machine hits all alike
        for label in order if r % 2 == 0 else order[::-1]:  # and none always runs first
            run = runs[label]
            t = run(1 if r < warmup else steps)
            if r >= warmup:
                times[label].append(t)
    out: dict[str, float] = {}
    for label, ts in times.items():
        out[f"{label}_ms"] = 1e3 * statistics.median(w for w, _ in ts)
        out[f"{label}_best_ms"] = 1e3 * min(w for w, _ in ts)
        out[f"{label}_cpu_ms"] = 1e3 * statistics.median(c for _, c in ts)
    for label in runs:
        if label != "jaxnets":
            out[f"ratio_{label}"] = out["jaxnets_ms"] / out[f"{label}_ms"]
    return out


def _cases(args: argparse.Namespace) -> list[tuple[str, str, int, int, int, int]]:
    """(model, row label, batch, image size, steps per round, rounds) for each row of the table."""
    cases = [("mlp", f"MLP 784-512-512-10, batch {args.batch}", args.batch, 0, args.steps, args.rounds),
             ("cnn", f"CNN, batch {args.batch}, 32x32", args.batch, 32, args.steps, args.rounds)]
    for size in args.resnet_sizes:
        label = f"ResNet-18, batch {args.resnet_batch}, {size}x{size}"
        cases.append(("resnet18", label, args.resnet_batch, size, args.resnet_steps,
                      args.resnet_rounds))
    return [c for c in cases if not args.only or c[0] == args.only]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5, help="steps per timed round (MLP, CNN)")
    parser.add_argument(
        "--rounds", type=int, default=7, help="interleaved rounds per library (median)"
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed one-step rounds first")
    parser.add_argument("--batch", type=int, default=128, help="batch of the MLP and CNN")
    parser.add_argument("--resnet-batch", type=int, default=16)
    parser.add_argument(
        "--resnet-sizes", type=lambda s: [int(v) for v in s.split(",")], default=[32, 64],
        help="ResNet-18 image sizes, comma-separated (one row each)",
    )
    parser.add_argument("--resnet-steps", type=int, default=1, help="steps per timed round")
    parser.add_argument(
        "--resnet-rounds", type=int, default=11,
        help="ResNet-18 rounds (many short ones: finer interleaving on a shared machine)",
    )
    parser.add_argument("--only", choices=("mlp", "cnn", "resnet18"), default=None)
    parser.add_argument("--no-torch", action="store_true", help="leave out the torch eager line")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "train_step.json",
                        help="the results file (default bench/results/train_step.json)")
    parser.add_argument("--no-json", action="store_true", help="write no results file")
    args, _ = parser.parse_known_args(argv)  # bench/run_all.py may pass flags meant for others

    print(
        f"backend: {jax.default_backend()} ({jax.devices()[0].device_kind}), "
        f"median per step over interleaved rounds ({args.rounds} x {args.steps} steps; ResNet-18 "
        f"{args.resnet_rounds} x {args.resnet_steps}); jaxnets / each contender"
    )
    short = {"jaxnets": "jaxnets", "flax": "flax", "flax_nchw": "flax NCHW", "torch": "torch"}
    print(f"{'model':<31}" + "".join(f"{v + ' ms':>13}" for v in short.values())
          + "".join(f"{'/ ' + v:>12}" for k, v in short.items() if k != "jaxnets"))
    groups: dict[str, dict[str, float]] = {}
    for name, label, batch, size, steps, rounds in _cases(args):
        r = bench_case(name, batch, size, steps, rounds, args.warmup, not args.no_torch)
        times = [f"{r[k + '_ms']:>13.2f}" if k + "_ms" in r else f"{'':>13}" for k in short]
        ratios = [f"{r['ratio_' + k]:>11.3f}x" if "ratio_" + k in r else f"{'':>12}"
                  for k in short if k != "jaxnets"]
        print(f"{label:<31}" + "".join(times) + "".join(ratios), flush=True)
        # Less disturbed by other processes on a shared machine: best wall time, median CPU time.
        for kind in ("best", "cpu"):
            print(f"{'  ' + kind + ' ms, jaxnets / each':<31}" + "".join(
                f"{r[f'{k}_{kind}_ms']:>13.2f}" if f"{k}_{kind}_ms" in r else f"{'':>13}" for k in short
            ) + "".join(
                f"{r[f'jaxnets_{kind}_ms'] / r[f'{k}_{kind}_ms']:>11.3f}x" if f"{k}_{kind}_ms" in r
                else f"{'':>12}" for k in short if k != "jaxnets"
            ))
        groups[label] = {LABELS[k]: r[k + "_ms"] for k in LABELS if k + "_ms" in r}
    if not args.no_json and groups:
        from chart import write_results

        title = (f"Train step, jit + adam ({jax.default_backend()}): ms per step, "
                 "relative to jaxnets")
        refs = [LABELS["torch"]] if any(LABELS["torch"] in g for g in groups.values()) else []
        print("wrote", write_results(args.json.stem, title, groups, unit="ms", reference=refs,
                                     directory=args.json.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
