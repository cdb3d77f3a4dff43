"""Shared test setup. Tests run on CPU; a GPU is never required."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")


@contextlib.contextmanager
def _x64(on: bool = True) -> Iterator[None]:
    import jax

    old = bool(jax.config.read("jax_enable_x64"))
    jax.config.update("jax_enable_x64", bool(on))
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", old)


@pytest.fixture
def x64() -> Callable[..., Any]:
    """``with x64(True): ...``: jax's 64-bit mode for one block.

    What ``jax.enable_x64`` does on newer jax; it is not in jax 0.7.1, the declared floor, where
    ``make test-min`` runs these tests too.
    """
    return _x64
