"""Loads a zoo model file in a fresh process that imports jaxnets only, and runs it.

Usage: _load_fresh.py FILE INPUTS.npz OUT.npz CALL
CALL names the inputs passed: "x" (apply(params, state, x)) or "ids,mask" (input_ids and the
attention_mask keyword). Outputs are written as out0, out1, ...
"""

import sys

import jax
import numpy as np

import jaxnets

path, inputs, out, call = sys.argv[1:5]
assert not any(m.startswith(("tests", "_torchvision", "_zoo", "conftest")) for m in sys.modules)
loaded = jaxnets.load(path)
assert type(loaded.model).__module__.startswith("jaxnets.models."), type(loaded.model)
arrays = dict(np.load(inputs))
if call == "x":
    y, _ = jax.jit(loaded.model.apply)(loaded.params, loaded.state, arrays["x"])
else:
    y, _ = jax.jit(lambda p, s, i, m: loaded.model.apply(p, s, i, attention_mask=m))(
        loaded.params, loaded.state, arrays["ids"], arrays["mask"]
    )
np.savez(out, **{f"out{i}": np.asarray(leaf) for i, leaf in enumerate(jax.tree.leaves(y))})
