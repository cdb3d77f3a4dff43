"""Helpers for comparing jaxnets layers with their torch twins (same weights, same inputs)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import jaxnets

RTOL, ATOL = 1e-5, 1e-5


def _to_torch(jax_module: Any, params: Any, state: Any, torch_module: Any) -> Any:
    """Copies jaxnets params/state into ``torch_module`` with load_state_dict(strict=True)."""
    import torch

    flat = jaxnets.state_dict(params, state, model=jax_module)
    torch_module.load_state_dict(
        {k: torch.from_numpy(np.array(v)) for k, v in flat.items()}, strict=True
    )
    return torch_module


def _close(got: Any, want: Any, rtol: float = RTOL, atol: float = ATOL) -> None:
    if hasattr(want, "detach"):
        want = want.detach().numpy()
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=rtol, atol=atol)


@pytest.fixture
def to_torch() -> Callable[..., Any]:
    """``to_torch(jax_module, params, state, torch_module)`` -> the torch module, weights copied."""
    return _to_torch


@pytest.fixture
def close() -> Callable[..., None]:
    """``close(jax_value, torch_value)``: float32 agreement at rtol 1e-5, atol 1e-5."""
    return _close


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
