"""Loads a model file in a fresh process and writes its outputs (for the test to compare).

Usage: load_model.py {builtin|custom} FILE OUT.npz
The process never imports the code that built the model; for "custom" it imports only the module
that defines and registers the custom classes.
"""

import sys

import numpy as np
from _train import outputs

import jaxnets

kind, path, out = sys.argv[1:4]
if kind == "custom":
    import custom_layers  # noqa: F401  (defines and registers the classes; builds nothing)
assert "save_model" not in sys.modules
loaded = jaxnets.load(path)
assert loaded.metadata["epoch"] == 3, loaded.metadata
if kind == "custom":
    assert np.array_equal(loaded.metadata["prep"].mean, np.arange(6.0))
assert type(loaded.optimizer).__name__ == "adam", loaded.optimizer
assert type(loaded.opt_state[0]).__name__ == "ScaleByAdamState", type(loaded.opt_state[0])
np.savez(
    out, **outputs(loaded.model, loaded.optimizer, loaded.params, loaded.state, loaded.opt_state)
)
