"""Training that survives Ctrl-C, SIGTERM (a preempted job) or a crash, and resumes where it stopped.

Run:  .venv/bin/python examples/resume_training.py           # press Ctrl-C part-way
      .venv/bin/python examples/resume_training.py           # again: resumes from the last save

The first run trains and checkpoints every ``--save-every`` steps. On SIGINT/SIGTERM it finishes
the current step, saves it, and exits with status 0; a crash loses at most ``--save-every`` steps.
A new run restores the latest checkpoint (params, optimizer state, RNG key, data position) and
continues; rerunning after the last step just reports that training is complete.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path
from types import FrameType


class StopRequested:
    """Turns SIGINT and SIGTERM into a flag the training loop checks between steps."""

    def __init__(self) -> None:
        self.signal: str | None = None
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signal.Signals(signum).name

    def __bool__(self) -> bool:
        return self.signal is not None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path("resume_ckpt"), help="checkpoint directory")
    parser.add_argument("--steps", type=int, default=2000, help="total training steps")
    parser.add_argument("--save-every", type=int, default=100)
    parser.add_argument("--step-delay", type=float, default=0.002, help="seconds of pretend work per step")
    args = parser.parse_args(argv)
    stop = StopRequested()  # before the slow imports, so an early Ctrl-C is honoured too
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

    import jax
    import jax.numpy as jnp
    import optax

    import jaxnets
    from jaxnets import nn, optim

    model = nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 1))
    opt = optim.sgd(0.05, momentum=0.9)

    @jax.jit
    def train_step(params, state, opt_state, key):  # type: ignore[no-untyped-def]
        x = jax.random.uniform(key, (64, 2), minval=-2.0, maxval=2.0)
        target = jnp.sin(x[:, :1]) * jnp.cos(x[:, 1:])

        def loss_fn(p):  # type: ignore[no-untyped-def]
            y, _ = model.apply(p, state, x)
            return jnp.mean((y - target) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    mgr = jaxnets.CheckpointManager(args.dir, max_to_keep=2)
    if mgr.latest_step() is None:
        params, state = model.init(jax.random.key(0))
        opt_state, rng, start = opt.init(params), jax.random.key(1), 0
        print(f"starting fresh in {args.dir}", flush=True)
    else:
        ckpt = mgr.restore()  # the latest step: arrays, optimizer state and RNG key, checked
        params, state, opt_state, rng, start = ckpt.params, ckpt.state, ckpt.opt_state, ckpt.rng, ckpt.step
        print(f"resumed from step {start} (loss then {ckpt.metrics['loss']:.5f})", flush=True)
    if start >= args.steps:
        print(f"training already complete: {start} of {args.steps} steps")
        mgr.close()
        return

    step, loss = start, jnp.nan
    while step < args.steps:
        rng, key = jax.random.split(rng)
        params, opt_state, loss = train_step(params, state, opt_state, key)
        step += 1
        time.sleep(args.step_delay)
        if step % args.save_every == 0 or step == args.steps or stop:
            mgr.save(step, params=params, state=state, opt_state=opt_state, rng=rng,
                     model=model, optimizer=opt, metrics={"loss": float(loss)}, force=True)
            print(f"step {step}: loss {float(loss):.5f}, saved", flush=True)
        if stop:
            mgr.close()  # waits for the background write: the step is complete on disk
            print(f"{stop.signal} received: stopped at step {step}; run again to resume", flush=True)
            return
    mgr.close()
    print(f"done: {step} steps, final loss {float(loss):.5f}")


if __name__ == "__main__":
    main()
