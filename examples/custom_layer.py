"""A custom layer and a custom composite model, registered, saved and loaded without their code.

Run:  .venv/bin/python examples/custom_layer.py

Shows the three things to know (docs/custom_layers.md):
1. a subclass of ``nn.Module`` is a frozen dataclass of its fields; ``@jaxnets.register`` makes it
   storable by name + hyperparameters;
2. a composite model lists its children as fields and calls them through ``self.bind``;
3. a process that has not registered the class gets a clear ``RegistryError`` naming it, never
   an import of code named in the file. Saving an unregistered class fails the same way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxnets
from jaxnets import nn


@jaxnets.register(name="examples.ScaleShift")  # the name stored in files: keep it stable
class ScaleShift(nn.Module):
    """``y = x * weight + bias`` per feature. Params: ``weight (features,)``, ``bias (features,)``."""

    features: int

    def init(self, key: jax.Array) -> tuple[nn.Params, nn.State]:
        return {"weight": jnp.ones((self.features,)), "bias": jnp.zeros((self.features,))}, {}

    def apply(
        self, params: nn.Params, state: nn.State, x: jax.Array, *, train: bool = False, key: nn.Key = None
    ) -> nn.Output:
        return x * params["weight"] + params["bias"], state


@jaxnets.register(name="examples.ResidualMLP")
class ResidualMLP(nn.Module):
    """``x + fc2(relu(norm(fc1(x))))``: children are fields, so keys are ``fc1.weight``, ``norm.bias`` ..."""

    fc1: nn.Linear = nn.Linear(8, 32)
    norm: ScaleShift = ScaleShift(32)
    fc2: nn.Linear = nn.Linear(32, 8)

    def apply(
        self, params: nn.Params, state: nn.State, x: jax.Array, *, train: bool = False, key: nn.Key = None
    ) -> nn.Output:
        m = self.bind(params, state, train=train, key=key)
        return x + m.fc2(jax.nn.relu(m.norm(m.fc1(x)))), m.state


class NotRegistered(nn.Module):
    """A layer someone forgot to register."""

    def apply(
        self, params: nn.Params, state: nn.State, x: jax.Array, *, train: bool = False, key: nn.Key = None
    ) -> nn.Output:
        return x, state


LOAD_ELSEWHERE = """
import jaxnets, sys
try:
    jaxnets.load(sys.argv[1])
except jaxnets.RegistryError as e:
    print(f"RegistryError: {e}")
    sys.exit(3)
"""


def main() -> None:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    path = Path("custom_layer.jnet")
    model = nn.Sequential(nn.Linear(4, 8), ResidualMLP(), nn.Linear(8, 2))
    params, state = model.init(jax.random.key(0))
    print("state_dict keys:", list(jaxnets.state_dict(params, state, model=model)))

    jaxnets.save(path, model, params, state)
    loaded = jaxnets.load(path)
    x = jax.random.normal(jax.random.key(1), (3, 4))
    y, _ = model.apply(params, state, x)
    y2, _ = loaded.model.apply(loaded.params, loaded.state, x)
    if loaded.model != model or not np.array_equal(y, y2):
        raise SystemExit("the loaded model differs")
    print(f"1. saved and loaded {path}: same model, same outputs (here the classes are registered)")

    # 2. A fresh process that never imported this file: the classes are unknown there.
    r = subprocess.run([sys.executable, "-c", LOAD_ELSEWHERE, str(path)], capture_output=True, text=True)
    print(f"2. loading in a process without the classes (exit {r.returncode}):\n   {r.stdout.strip()}")

    # 3. Saving a class that is not registered fails before anything is written.
    try:
        jaxnets.save("unregistered.jnet", nn.Sequential(NotRegistered()), {"0": {}}, {"0": {}})
    except jaxnets.RegistryError as e:
        print(f"3. saving an unregistered layer: RegistryError: {e}")
    if Path("unregistered.jnet").exists():
        raise SystemExit("a failed save left a file behind")


if __name__ == "__main__":
    main()
