"""Trains a model 3 steps and saves it with its optimizer; writes the expected outputs.

Usage: save_model.py {builtin|custom} FILE EXPECTED.npz
"""

import sys

import jax
import numpy as np
from _train import data, outputs, step

import jaxnets
from jaxnets import nn

kind, path, expected = sys.argv[1:4]
if kind == "custom":
    from custom_layers import Net, Standardize

    model = Net()
    metadata = {"epoch": 3, "prep": Standardize(np.arange(6.0), np.ones(6))}
else:
    model = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    metadata = {"epoch": 3, "note": "builtin"}
opt = jaxnets.optim.adam(1e-2)
params, state = model.init(jax.random.key(0))
opt_state = opt.init(params)
x, y = data()
for _ in range(3):
    params, state, opt_state = step(model, opt, params, state, opt_state, x, y)
jaxnets.save(path, model, params, state, opt_state=opt_state, optimizer=opt, metadata=metadata)
np.savez(expected, **outputs(model, opt, params, state, opt_state))
