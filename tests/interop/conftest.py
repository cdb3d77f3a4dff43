"""Shared helpers of the interop tests: torch is the reference the conversions are checked against."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def to_torch_sd(sd: dict[str, Any]) -> dict[str, Any]:
    """numpy/jax arrays -> torch tensors (copies: torch must not share jax's read-only buffers)."""
    return {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}


def randomize_torch(module: Any, seed: int = 0) -> None:
    """Every parameter and float buffer random (running_var positive), so nothing passes by zeros."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            if t.dtype.is_floating_point:
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if "var" in name else torch.randn(t.shape, generator=g) * 0.5)
            elif "num_batches_tracked" in name:
                t.fill_(7)
