"""Writes tests/io/data/v0_1_*.jnet with jaxnets 0.1's writer (run once, at the 0.1 commit)."""
import sys

import jax
import numpy as np

import jaxnets
from jaxnets import nn

out = sys.argv[1]
model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
params, state = model.init(jax.random.key(0))
opt = jaxnets.optim.adam(1e-3)
opt_state = opt.init(params)
jaxnets.save(f"{out}/v0_1_model.jnet", model, params, state, opt_state=opt_state, optimizer=opt,
             metadata={"epoch": 3, "scale": 0.5, "mean": np.arange(4.0, dtype=np.float32)}, fsync=False)
flat = {**{"m." + k: v for k, v in jaxnets.state_dict(params, state, model=model).items()},
        **{"o." + k: np.asarray(v) for k, v in jaxnets.flatten(opt_state).items()}}
np.savez(f"{out}/v0_1_model.npz", **flat)
tree = {"layers": [np.ones(2, np.float32), (np.zeros(3, np.int32), None)], "step": np.array(5, np.int32)}
jaxnets.save_state_dict(f"{out}/v0_1_tree.jnet", tree, fsync=False)
print(jaxnets.__version__)
