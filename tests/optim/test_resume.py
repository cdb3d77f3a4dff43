"""A model file restores the optimizer itself, in a process without the training script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

import jaxnets
from jaxnets import nn, optim

SCRIPT = Path(__file__).with_name("resume_script.py")


def _train_a_little():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    params, state = model.init(jax.random.key(0))
    opt = optim.chain(
        optim.clip_by_global_norm(1.0),
        optim.adamw(optim.warmup_cosine_decay_schedule(0.0, 1e-2, 2, 10), weight_decay=0.01),
    )
    opt_state = opt.init(params)
    for _ in range(3):
        grads = jax.tree.map(lambda p: p * 2.0 - 0.3, params)
        updates, opt_state = opt.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
    return model, params, state, opt, opt_state


def _next_params(opt, opt_state, params):
    grads = jax.tree.map(lambda p: 0.5 * p + 1.0, params)
    updates, _ = opt.update(grads, opt_state, params)
    return jaxnets.state_dict(optax.apply_updates(params, updates))


def test_loaded_optimizer_equals_saved_one_and_continues_identically(tmp_path):
    model, params, state, opt, opt_state = _train_a_little()
    jaxnets.save(tmp_path / "m.jxn", model, params, state, opt_state=opt_state, optimizer=opt)
    loaded = jaxnets.load(tmp_path / "m.jxn")
    assert loaded.optimizer == opt
    assert jax.tree.structure(loaded.opt_state) == jax.tree.structure(opt_state)
    want = _next_params(opt, opt_state, params)
    got = _next_params(loaded.optimizer, loaded.opt_state, loaded.params)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


@pytest.mark.slow
def test_a_fresh_process_resumes_training_from_the_file(tmp_path):
    model, params, state, opt, opt_state = _train_a_little()
    jaxnets.save(tmp_path / "m.jxn", model, params, state, opt_state=opt_state, optimizer=opt)
    out = tmp_path / "next.npz"
    subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "m.jxn"), str(out)], check=True, timeout=120
    )
    got = np.load(out)
    assert str(got["optimizer"]) == repr(opt)
    want = _next_params(opt, opt_state, params)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
