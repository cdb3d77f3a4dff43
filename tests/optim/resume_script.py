"""Run by test_resume.py in a fresh process: it never sees the code that built the optimizer.

Usage: python resume_script.py MODEL_FILE OUT_NPZ. Loads the model file, takes one optimizer step
with the restored optimizer and state on fixed gradients, and writes the new params flat to OUT_NPZ.
"""

import sys

import jax
import numpy as np
import optax

import jaxnets


def main() -> None:
    src, out = sys.argv[1], sys.argv[2]
    loaded = jaxnets.load(src)
    grads = jax.tree.map(lambda p: 0.5 * p + 1.0, loaded.params)
    updates, _ = loaded.optimizer.update(grads, loaded.opt_state, loaded.params)
    params = optax.apply_updates(loaded.params, updates)
    np.savez(out, optimizer=repr(loaded.optimizer), **jaxnets.state_dict(params))


if __name__ == "__main__":
    main()
