"""The jaxnets tour in two minutes: train, get interrupted, resume exactly, export, predict.

Run:  make demo          (or: .venv/bin/python examples/demo.py)

What it does, each step in its own process so that nothing survives in memory between them:

1. trains a small CNN (Conv2d, BatchNorm2d, ReLU, MaxPool2d, Dropout, Flatten, Linear) on
   scikit-learn's bundled 8x8 digits, checkpointing every epoch with ``jaxnets.CheckpointManager``
   into ``demo_out/run``, and stops part-way (the process exits);
2. a new process resumes from the checkpoint on disk and finishes training;
3. an uninterrupted run of the same length trains side by side into ``demo_out/reference``; the
   resumed run's final params must equal it bit for bit;
4. exports the final checkpoint as one self-contained model file, ``demo_out/digits.jnet``;
5. ``examples/predict.py`` (which imports only jaxnets, numpy and sklearn's data, not this file)
   loads it in a fresh process and reports test accuracy;
6. draws the training curves into ``demo_out/curves.png``.

``python examples/demo.py train --help`` shows the training worker's own options.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
SEED = 0
EPOCHS = 12
STOP_AFTER = 5
BATCH = 64
LR = 3e-3


# --- data ----------------------------------------------------------------------------------------
def load_data(seed: int = SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The digits as ``(x_train, y_train, x_test, y_test)``; images ``(N, 1, 8, 8)`` float32 in [0, 1].

    The same 80/20 stratified split every time (``random_state=seed``); examples/predict.py
    repeats these lines so that it does not import this file.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)
    return x_tr, y_tr, x_te, y_te


# --- model ---------------------------------------------------------------------------------------
def make_model() -> Any:
    """A small CNN for ``(N, 1, 8, 8)`` images -> 10 logits, with PyTorch's layer names and keys."""
    from jaxnets import nn

    return nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=3, padding=1),  # 0
        nn.BatchNorm2d(16),  # 1
        nn.ReLU(),  # 2
        nn.MaxPool2d(2),  # 3: 8x8 -> 4x4
        nn.Conv2d(16, 32, kernel_size=3, padding=1),  # 4
        nn.BatchNorm2d(32),  # 5
        nn.ReLU(),  # 6
        nn.MaxPool2d(2),  # 7: 4x4 -> 2x2
        nn.Flatten(),  # 8
        nn.Dropout(0.25),  # 9
        nn.Linear(32 * 2 * 2, 10),  # 10
    )


def make_optimizer() -> Any:
    from jaxnets import optim

    return optim.adam(LR)


# --- the training worker (runs in its own process) ----------------------------------------------
def train(out: Path, epochs: int, stop_after: int | None, quiet: bool) -> None:
    """Trains ``epochs`` epochs, resuming from ``out`` when it holds a checkpoint.

    Every epoch ends with a checkpoint (params, BatchNorm state, optimizer state, metrics and the
    curves so far). ``stop_after`` exits the process right after that epoch's checkpoint is on
    disk, as a crash or a preempted job would.
    """
    import jax
    import jax.numpy as jnp
    import optax
    from tqdm import tqdm

    import jaxnets

    # Each process compiles the same train step: share the compiled code through a disk cache.
    jax.config.update("jax_compilation_cache_dir", str(out.parent / ".jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    x_tr, y_tr, x_te, y_te = load_data()
    model, opt = make_model(), make_optimizer()
    steps_per_epoch = len(x_tr) // BATCH
    show_bar = not quiet and sys.stdout.isatty()  # a bar on a terminal, one line per epoch in logs

    @jax.jit
    def train_step(params, state, opt_state, x, y, key):  # type: ignore[no-untyped-def]
        def loss_fn(p):  # type: ignore[no-untyped-def]
            logits, new_state = model.apply(p, state, x, train=True, key=key)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return loss, (new_state, logits)

        (loss, (new_state, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        acc = jnp.mean(jnp.argmax(logits, -1) == y)
        return optax.apply_updates(params, updates), new_state, opt_state, loss, acc

    @jax.jit
    def evaluate(params, state, x, y):  # type: ignore[no-untyped-def]
        logits, _ = model.apply(params, state, x, train=False)
        return jnp.mean(jnp.argmax(logits, -1) == y)

    mgr = jaxnets.CheckpointManager(out, max_to_keep=3, best_metric="test_accuracy", best_mode="max")
    start = mgr.latest_step()
    if start is None:
        params, state = model.init(jax.random.key(SEED))
        opt_state = opt.init(params)
        history: list[dict[str, float]] = []
        start = 0
    else:
        # A new process: everything comes back from disk, checked against the model's structure.
        ckpt = mgr.restore(start)
        params, state, opt_state = ckpt.params, ckpt.state, ckpt.opt_state
        history = list(ckpt.extra["history"])
        print(f"resumed from {out} at epoch {start} (test accuracy so far {history[-1]['test_accuracy']:.1%})")

    for epoch in range(start, epochs):
        # Shuffling and dropout keys derive from (seed, epoch, batch) alone, so a resumed run
        # draws exactly what an uninterrupted one would.
        order = np.random.default_rng([SEED, epoch]).permutation(len(x_tr))
        epoch_key = jax.random.fold_in(jax.random.key(SEED + 1), epoch)
        losses, accs = [], []
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1:2d}/{epochs}", leave=True,
                   ncols=90, disable=not show_bar, file=sys.stdout)
        for b in bar:
            idx = order[b * BATCH : (b + 1) * BATCH]
            params, state, opt_state, loss, acc = train_step(
                params, state, opt_state, x_tr[idx], y_tr[idx], jax.random.fold_in(epoch_key, b)
            )
            losses.append(float(loss))
            accs.append(float(acc))
            bar.set_postfix(loss=f"{np.mean(losses):.3f}", acc=f"{np.mean(accs):.1%}")
        metrics = {
            "loss": float(np.mean(losses)),
            "accuracy": float(np.mean(accs)),
            "test_accuracy": float(evaluate(params, state, x_te, y_te)),
        }
        history.append(metrics)
        bar.set_postfix(loss=f"{metrics['loss']:.3f}", acc=f"{metrics['accuracy']:.1%}",
                        test=f"{metrics['test_accuracy']:.1%}")
        bar.close()
        mgr.save(epoch + 1, params=params, state=state, opt_state=opt_state, model=model,
                 optimizer=opt, metrics=metrics, extra={"history": history})
        if not show_bar and not quiet:
            print(f"epoch {epoch + 1:2d}/{epochs}: loss {metrics['loss']:.3f}  "
                  f"acc {metrics['accuracy']:.1%}  test {metrics['test_accuracy']:.1%}")
        if stop_after is not None and epoch + 1 == stop_after:
            mgr.wait()
            steps = mgr.all_steps()
            mgr.close()
            print(f"stopped after epoch {epoch + 1}: the process exits here; checkpoints on disk: {steps}")
            return
    mgr.wait()
    mgr.close()


# --- the tour ------------------------------------------------------------------------------------
def section(n: int, title: str) -> None:
    print(f"\n\033[1m[{n}] {title}\033[0m" if sys.stdout.isatty() else f"\n[{n}] {title}")
    print("-" * 78)


def run(*args: str) -> None:
    """Runs this file's worker, or another example, in a fresh Python process."""
    subprocess.run([sys.executable, *args], check=True)


def same_params(a: Any, b: Any) -> tuple[bool, int, float]:
    """(bitwise equal, number of entries, max abs difference) of two params trees."""
    import jaxnets

    fa, fb = jaxnets.state_dict(a), jaxnets.state_dict(b)
    if fa.keys() != fb.keys():
        return False, len(fa), float("inf")
    diff = max(float(np.max(np.abs(fa[k].astype(np.float64) - fb[k]))) if fa[k].size else 0.0 for k in fa)
    return all(np.array_equal(fa[k], fb[k]) for k in fa), len(fa), diff


def plot(history: list[dict[str, float]], stop_after: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.arange(1, len(history) + 1)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [h["loss"] for h in history], "o-", label="train loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("cross-entropy")
    ax2.plot(epochs, [h["accuracy"] for h in history], "o-", label="train accuracy")
    ax2.plot(epochs, [h["test_accuracy"] for h in history], "s-", label="test accuracy")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy")
    for ax in (ax1, ax2):
        ax.axvline(stop_after + 0.5, color="gray", ls="--", lw=1, label="stopped / resumed")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("jaxnets demo: small CNN on sklearn digits (interrupted and resumed)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def tour(out: Path, epochs: int, stop_after: int) -> None:
    import shutil

    t0 = time.perf_counter()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    this = str(Path(__file__).resolve())
    common = ["--epochs", str(epochs)]

    section(1, "Data and model")
    x_tr, y_tr, x_te, y_te = load_data()
    print(f"sklearn digits: {len(x_tr)} train / {len(x_te)} test images of 8x8, 10 classes "
          f"(bundled with scikit-learn, no download)")
    import jaxnets

    model = make_model()
    summary = getattr(jaxnets, "summary", None)
    if summary is not None:
        print(summary(model, (1, 1, 8, 8)))
    else:
        print(model)

    section(2, f"Train, checkpointing every epoch; the process stops after epoch {stop_after}")
    run(this, "train", "--out", str(out / "run"), "--stop-after", str(stop_after), *common)

    section(3, "Resume in a new process from the checkpoint on disk")
    # Meanwhile an uninterrupted run trains the same epochs, to prove the resume was exact.
    ref = subprocess.Popen([sys.executable, this, "train", "--out", str(out / "reference"), "--quiet", *common])
    run(this, "train", "--out", str(out / "run"), *common)
    if ref.wait() != 0:
        raise SystemExit("the reference run failed")

    section(4, "Proof: resumed run == uninterrupted run")
    resumed = jaxnets.CheckpointManager(out / "run")
    reference = jaxnets.CheckpointManager(out / "reference")
    a, b = resumed.restore(), reference.restore()
    equal, n, diff = same_params(a.params, b.params)
    equal_state, _, _ = same_params(a.state, b.state)
    print(f"step {a.step} (resumed) vs step {b.step} (uninterrupted): {n} parameter tensors, "
          f"max |difference| = {diff:g}")
    print(f"params bitwise equal: {equal}; BatchNorm running stats bitwise equal: {equal_state}")
    if not (equal and equal_state):
        raise SystemExit("resume was not exact")
    history = list(a.extra["history"])

    section(5, "Export one self-contained model file")
    model_file = out / "digits.jnet"
    resumed.export(resumed.latest_step(), model_file)
    resumed.close()
    reference.close()
    print(f"{model_file}: {model_file.stat().st_size / 1024:.1f} KiB "
          f"(architecture + weights + BatchNorm stats; no pickle, no code)")
    print(f"inspect it with:  jaxnets inspect {model_file}")

    section(6, "Load it in a fresh process that knows nothing of this script")
    run(str(HERE / "predict.py"), str(model_file))

    section(7, "Training curves")
    png = out / "curves.png"
    plot(history, stop_after, png)
    (out / "history.json").write_text(json.dumps(history, indent=1))
    print(f"wrote {png}")
    print(f"\ndone in {time.perf_counter() - t0:.0f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out/)")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--stop-after", type=int, default=STOP_AFTER, help="epoch after which the first run stops")
    sub = parser.add_subparsers(dest="command")
    worker = sub.add_parser("train", help="the training worker (one process)")
    worker.add_argument("--out", type=Path, required=True, help="checkpoint folder")
    worker.add_argument("--epochs", type=int, default=EPOCHS)
    worker.add_argument("--stop-after", type=int, default=None, help="exit after this epoch's checkpoint")
    worker.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    if args.command == "train":
        train(args.out, args.epochs, args.stop_after, args.quiet)
    else:
        tour(args.out, args.epochs, args.stop_after)


if __name__ == "__main__":
    main()
