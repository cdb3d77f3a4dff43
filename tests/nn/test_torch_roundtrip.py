"""Whole models both ways between jaxnets and torch, strict=True, same outputs, same key order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxnets
from jaxnets import nn


def mlp() -> tuple[nn.Module, torch.nn.Module]:
    j = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))
    t = torch.nn.Sequential(
        torch.nn.Linear(6, 16),
        torch.nn.ReLU(),
        torch.nn.Linear(16, 16),
        torch.nn.Tanh(),
        torch.nn.Linear(16, 3),
    )
    return j, t


def cnn() -> tuple[nn.Module, torch.nn.Module]:
    j = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Dropout(0.25),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )
    T = torch.nn
    t = T.Sequential(
        T.Conv2d(3, 8, 3, padding=1),
        T.BatchNorm2d(8),
        T.ReLU(),
        T.MaxPool2d(2),
        T.Dropout(0.25),
        T.Conv2d(8, 16, 3, padding=1),
        T.BatchNorm2d(16),
        T.ReLU(),
        T.AdaptiveAvgPool2d(1),
        T.Flatten(),
        T.Linear(16, 10),
    )
    return j, t


@jaxnets.register(name="tests.nn.TinyTransformer")
@dataclass(frozen=True)
class TinyTransformer(nn.Module):
    """Token embedding, one pre-norm transformer block, and a vocabulary head."""

    embed: nn.Embedding = nn.Embedding(50, 16, padding_idx=0)
    ln1: nn.LayerNorm = nn.LayerNorm(16)
    attn: nn.MultiheadAttention = nn.MultiheadAttention(16, 4, batch_first=True)
    ln2: nn.LayerNorm = nn.LayerNorm(16)
    fc1: nn.Linear = nn.Linear(16, 32)
    act: nn.GELU = nn.GELU()
    fc2: nn.Linear = nn.Linear(32, 16)
    drop: nn.Dropout = nn.Dropout(0.1)
    head: nn.Linear = nn.Linear(16, 50)

    def apply(
        self, params: Any, state: Any, x: Any, *, train: bool = False, key: Any = None
    ) -> Any:
        m = self.bind(params, state, train=train, key=key)
        h = m.embed(x)
        a, _ = m.attn(m.ln1(h), key_padding_mask=x == 0, need_weights=False)
        h = h + m.drop(a)
        h = h + m.drop(m.fc2(m.act(m.fc1(m.ln2(h)))))
        return m.head(h), m.state


class TorchTinyTransformer(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        T = torch.nn
        self.embed = T.Embedding(50, 16, padding_idx=0)
        self.ln1 = T.LayerNorm(16)
        self.attn = T.MultiheadAttention(16, 4, batch_first=True)
        self.ln2 = T.LayerNorm(16)
        self.fc1 = T.Linear(16, 32)
        self.act = T.GELU()
        self.fc2 = T.Linear(32, 16)
        self.drop = T.Dropout(0.1)
        self.head = T.Linear(16, 50)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        a, _ = self.attn(
            self.ln1(h), self.ln1(h), self.ln1(h), key_padding_mask=x == 0, need_weights=False
        )
        h = h + self.drop(a)
        h = h + self.drop(self.fc2(self.act(self.fc1(self.ln2(h)))))
        return self.head(h)


def transformer() -> tuple[nn.Module, torch.nn.Module]:
    return TinyTransformer(), TorchTinyTransformer()


def _input(name: str) -> np.ndarray:
    rng = np.random.default_rng(1)
    if name == "mlp":
        return rng.standard_normal((4, 6)).astype(np.float32)
    if name == "cnn":
        return rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    tokens = rng.integers(1, 50, size=(3, 7))
    tokens[0, 5:] = 0  # padding
    return tokens


MODELS = {"mlp": mlp, "cnn": cnn, "transformer": transformer}


def _torch_out(t: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    t.eval()
    with torch.no_grad():
        return t(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("name", MODELS)
def test_jaxnets_to_torch_strict(name, close):
    model, t = MODELS[name]()
    params, state = model.init(jax.random.key(0))
    if name == "cnn":  # non-trivial running stats: a few training steps
        for i in range(3):
            x = jax.random.normal(jax.random.key(10 + i), (4, 3, 8, 8)) + i
            _, state = model.apply(params, state, x, train=True, key=jax.random.key(i))
    sd = model.state_dict(params, state)
    assert list(sd) == list(t.state_dict())
    t.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, strict=True)
    x = _input(name)
    y, _ = model.apply(params, state, jnp.asarray(x))
    close(y, _torch_out(t, x))


@pytest.mark.parametrize("name", MODELS)
def test_torch_to_jaxnets_strict(name, close):
    model, t = MODELS[name]()
    torch.manual_seed(0)
    for m in t.modules():  # fresh torch init, with non-zero biases / norms
        if isinstance(m, (torch.nn.LayerNorm, torch.nn.BatchNorm2d)):
            torch.nn.init.normal_(m.weight, 1.0, 0.2)
            torch.nn.init.normal_(m.bias, 0.0, 0.2)
        if isinstance(m, torch.nn.MultiheadAttention):
            torch.nn.init.normal_(m.in_proj_bias, 0.0, 0.2)
    if name == "cnn":
        t.train()
        for i in range(3):
            t(torch.randn(4, 3, 8, 8) + i)
    params, state = jaxnets.load_state_dict(model, t.state_dict())
    assert list(model.state_dict(params, state)) == list(t.state_dict())
    x = _input(name)
    y, _ = model.apply(params, state, jnp.asarray(x))
    close(y, _torch_out(t, x))
    if name == "cnn":
        assert int(state["1"]["num_batches_tracked"]) == 3


def test_key_order_survives_jit_and_optax_resorting():
    model, t = MODELS["transformer"]()
    params, state = model.init(jax.random.key(0))
    params = jax.jit(lambda p: jax.tree.map(lambda v: v * 1.0, p))(params)
    assert list(model.state_dict(params, state)) == list(t.state_dict())
