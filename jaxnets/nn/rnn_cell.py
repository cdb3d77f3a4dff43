"""RNNCell, LSTMCell and GRUCell (one time step), and the step math that RNN/LSTM/GRU scan.

Gates and their order are torch's: LSTM ``i, f, g, o``; GRU ``r, z, n`` with
``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``. Params are ``weight_ih (G*H, in)``,
``weight_hh (G*H, H)``, ``bias_ih``/``bias_hh (G*H,)``, all ``U(±1/sqrt(hidden_size))`` as torch.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from jaxnets.core.registry import register
from jaxnets.nn import init as initializers
from jaxnets.nn._utils import check
from jaxnets.nn.module import Key, Module, Output, Params, State

__all__ = ["RNNCell", "LSTMCell", "GRUCell", "GATES", "affine", "step", "init_weights", "check_mode"]

GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}
Carry = tuple[jax.Array, ...]


def affine(x: jax.Array, w: jax.Array, b: jax.Array | None) -> jax.Array:
    y = jnp.matmul(x, w.T)
    return y if b is None else y + b.reshape((1,) * (y.ndim - 1) + (-1,))


def step(
    mode: str, gi: jax.Array, carry: Carry, w_hh: jax.Array, b_hh: jax.Array | None,
    w_hr: jax.Array | None = None,
) -> Carry:  # fmt: skip
    """One step from ``gi = x @ W_ih.T + b_ih`` and ``carry`` (``(h,)``, or ``(h, c)`` for LSTM)."""
    h = carry[0]
    gh = affine(h, w_hh, b_hh)
    if mode == "RNN_TANH":
        return (jnp.tanh(gi + gh),)
    if mode == "RNN_RELU":
        return (jax.nn.relu(gi + gh),)
    if mode == "LSTM":
        i, f, g, o = jnp.split(gi + gh, 4, axis=-1)
        c = jax.nn.sigmoid(f) * carry[1] + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h if w_hr is None else jnp.matmul(h, w_hr.T), c)
    ir, iz, in_ = jnp.split(gi, 3, axis=-1)
    hr, hz, hn = jnp.split(gh, 3, axis=-1)
    r, z = jax.nn.sigmoid(ir + hr), jax.nn.sigmoid(iz + hz)
    n = jnp.tanh(in_ + r * hn)
    return ((1 - z) * n + z * h,)


def init_weights(key: jax.Array, shapes: dict[str, tuple[int, ...]], hidden_size: int) -> Params:
    """Every weight and bias ``U(±1/sqrt(hidden_size))``, as torch's ``reset_parameters``."""
    bound = 1.0 / math.sqrt(hidden_size) if hidden_size > 0 else 0.0
    keys = jax.random.split(key, max(len(shapes), 1))
    return {name: initializers.uniform(k, shape, bound) for (name, shape), k in zip(shapes.items(), keys)}


def check_mode(layer: Module, nonlinearity: str) -> str:
    check(
        nonlinearity in ("tanh", "relu"),
        layer,
        f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}.",
    )
    return "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"


class _Cell(Module):
    input_size: int
    hidden_size: int
    bias: bool = True

    _mode: ClassVar[str] = "LSTM"

    def mode(self) -> str:
        return self._mode

    def init(self, key: jax.Array) -> tuple[Params, State]:
        g, h = GATES[self.mode()] * self.hidden_size, self.hidden_size
        shapes: dict[str, tuple[int, ...]] = {"weight_ih": (g, self.input_size), "weight_hh": (g, h)}
        if self.bias:
            shapes.update(bias_ih=(g,), bias_hh=(g,))
        return init_weights(key, shapes, self.hidden_size), {}

    def apply(  # type: ignore[override]
        self, params: Params, state: State, input: Any, hx: Any = None, *,
        train: bool = False, key: Key = None,
    ) -> Output:  # fmt: skip
        x = jnp.asarray(input)
        check(
            x.ndim in (1, 2) and x.shape[-1] == self.input_size,
            self,
            f"expected input (N, {self.input_size}) or ({self.input_size},), got shape {x.shape}.",
        )
        lstm = self.mode() == "LSTM"
        zeros = jnp.zeros(x.shape[:-1] + (self.hidden_size,), x.dtype)
        carry: Carry
        if hx is None:
            carry = (zeros, zeros) if lstm else (zeros,)
        else:
            carry = tuple(hx) if lstm else (hx,)
            for c in carry:
                check(c.shape == zeros.shape, self, f"expected hidden state {zeros.shape}, got {c.shape}.")
        gi = affine(x, params["weight_ih"], params.get("bias_ih"))
        out = step(self.mode(), gi, carry, params["weight_hh"], params.get("bias_hh"))
        return (out if lstm else out[0]), state


_CELL_DOC = """{what}, as ``torch.nn.{name}({args})``.

    Params: ``weight_ih ({g}*H, input_size)``, ``weight_hh ({g}*H, H)``, ``bias_ih``,
    ``bias_hh ({g}*H,)`` (when ``bias``), ``U(±1/sqrt(H))``.

    Call: ``apply(params, state, input, hx=None)`` -> ``({out}, state)``. Shapes: ``input (N,
    input_size)`` or ``(input_size,)``; {hx} ``(N, H)`` (or ``(H,)``), zeros when omitted.

    Raises:
      ValueError: a wrong input or hidden-state shape{extra}.
    """


@register(name="nn.RNNCell")
class RNNCell(_Cell):
    __doc__ = _CELL_DOC.format(
        what="Elman RNN step ``h' = tanh(W_ih x + b_ih + W_hh h + b_hh)`` (or relu)",
        name="RNNCell", args="input_size, hidden_size, bias=True, nonlinearity='tanh'",
        g=1, out="h'", hx="``hx``", extra=", a nonlinearity other than tanh/relu",
    )  # fmt: skip

    nonlinearity: str = "tanh"

    def __post_init__(self) -> None:
        check_mode(self, self.nonlinearity)

    def mode(self) -> str:
        return check_mode(self, self.nonlinearity)


@register(name="nn.LSTMCell")
class LSTMCell(_Cell):
    __doc__ = _CELL_DOC.format(
        what="LSTM step (gates i, f, g, o)", name="LSTMCell",
        args="input_size, hidden_size, bias=True", g=4, out="(h', c')",
        hx="``hx = (h, c)``, each", extra="",
    )  # fmt: skip

    _mode: ClassVar[str] = "LSTM"


@register(name="nn.GRUCell")
class GRUCell(_Cell):
    __doc__ = _CELL_DOC.format(
        what="GRU step (gates r, z, n)", name="GRUCell",
        args="input_size, hidden_size, bias=True", g=3, out="h'", hx="``hx``", extra="",
    )  # fmt: skip

    _mode: ClassVar[str] = "GRU"
