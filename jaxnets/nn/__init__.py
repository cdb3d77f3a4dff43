"""Layers with PyTorch's names, arguments, defaults and parameter layouts (see :mod:`.module`)."""

from jaxnets.nn.container import Sequential
from jaxnets.nn.linear import Flatten, Identity, Linear
from jaxnets.nn.module import Bound, Module, Params, State

__all__ = [
    "Bound",
    "Flatten",
    "Identity",
    "Linear",
    "Module",
    "Params",
    "Sequential",
    "State",
]
