"""RNN, LSTM and GRU over whole sequences (``jax.lax.scan`` over time), with torch.nn's
arguments, defaults, ``weight_ih_l0``/``..._reverse`` keys and return values.

Packed sequences (``torch.nn.utils.rnn.pack_padded_sequence``) are not supported: inputs are
dense ``(L, N, H_in)`` arrays and every sequence runs all ``L`` steps, so for padded batches the
outputs past a sequence's length and ``h_n`` are those of the padded steps.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxnets.core.registry import register
from jaxnets.errors import JaxnetsWarning
from jaxnets.nn._utils import check, is_training
from jaxnets.nn.dropout import dropout as dropout_fn
from jaxnets.nn.module import Key, Module, Output, Params, State
from jaxnets.nn.rnn_cell import GATES, Carry, affine, check_mode, init_weights, step

__all__ = ["RNN", "LSTM", "GRU"]


class _Args(NamedTuple):
    input_size: int
    hidden_size: int
    num_layers: int
    bias: bool
    batch_first: bool
    dropout: float
    bidirectional: bool


class _RNNBase(Module):
    """The scan shared by RNN, LSTM and GRU; each declares its fields in torch's order."""

    def _args(self) -> _Args:
        return _Args(*(getattr(self, f) for f in _Args._fields))

    def __post_init__(self) -> None:
        a = self._args()
        check(a.hidden_size > 0, self, f"hidden_size must be positive, got {a.hidden_size}.")
        check(a.num_layers > 0, self, f"num_layers must be positive, got {a.num_layers}.")
        check(0.0 <= a.dropout <= 1.0, self, f"dropout must be in [0, 1], got {a.dropout}.")
        self.mode()  # checks RNN's nonlinearity
        if a.dropout > 0 and a.num_layers == 1:
            warnings.warn(  # as torch: the option only acts between stacked layers
                f"{type(self).__name__}: dropout={a.dropout} does nothing with num_layers=1 "
                "(dropout is applied after every recurrent layer but the last).",
                JaxnetsWarning,
                stacklevel=3,
            )

    def mode(self) -> str:
        raise NotImplementedError

    def _proj(self) -> int:
        return 0

    def _out_size(self) -> int:
        a = self._args()
        return self._proj() or a.hidden_size

    def _dirs(self) -> list[str]:
        a = self._args()
        return ["", "_reverse"] if a.bidirectional else [""]

    def init(self, key: jax.Array) -> tuple[Params, State]:
        a = self._args()
        g, h, out = GATES[self.mode()] * a.hidden_size, a.hidden_size, self._out_size()
        shapes: dict[str, tuple[int, ...]] = {}
        for layer in range(a.num_layers):
            width = a.input_size if layer == 0 else out * len(self._dirs())
            for sfx in self._dirs():
                shapes[f"weight_ih_l{layer}{sfx}"] = (g, width)
                shapes[f"weight_hh_l{layer}{sfx}"] = (g, out)
                if a.bias:
                    shapes[f"bias_ih_l{layer}{sfx}"] = (g,)
                    shapes[f"bias_hh_l{layer}{sfx}"] = (g,)
                if self._proj():
                    shapes[f"weight_hr_l{layer}{sfx}"] = (self._proj(), h)
        return init_weights(key, shapes, h), {}

    def _initial(self, x: jax.Array, hx: Any, n: int | None) -> list[Carry]:
        """Per (layer, direction), the initial carry; checks ``hx``'s shapes as torch does."""
        a = self._args()
        d = len(self._dirs()) * a.num_layers
        lead = (d,) if n is None else (d, n)
        h_shape, c_shape = lead + (self._out_size(),), lead + (a.hidden_size,)
        lstm = self.mode() == "LSTM"
        c0: jax.Array | None
        if hx is None:
            h0 = jnp.zeros(h_shape, x.dtype)
            c0 = jnp.zeros(c_shape, x.dtype)
        else:
            h0, c0 = hx if lstm else (hx, None)
            check(h0.shape == h_shape, self, f"expected hidden state h_0 {h_shape}, got {h0.shape}.")
            if c0 is not None:
                check(c0.shape == c_shape, self, f"expected cell state c_0 {c_shape}, got {c0.shape}.")
        if n is None:  # unbatched: run as a batch of one
            h0, c0 = h0[:, None], (None if c0 is None else c0[:, None])
        return [(h0[i], c0[i]) if lstm else (h0[i],) for i in range(d)]  # type: ignore[index]

    def apply(  # type: ignore[override]
        self, params: Params, state: State, input: Any, hx: Any = None, *,
        train: bool = False, key: Key = None,
    ) -> Output:  # fmt: skip
        a = self._args()
        x = jnp.asarray(input)
        check(
            x.ndim in (2, 3) and x.shape[-1] == a.input_size,
            self,
            f"expected input {'(N, L' if a.batch_first else '(L, N'}, {a.input_size}) or "
            f"(L, {a.input_size}), got shape {x.shape}.",
        )
        training = is_training(self, train)
        unbatched = x.ndim == 2
        x = x[:, None] if unbatched else (jnp.swapaxes(x, 0, 1) if a.batch_first else x)
        carries = self._initial(x, hx, None if unbatched else x.shape[1])
        mode, finals = self.mode(), []
        for layer in range(a.num_layers):
            outs = []
            for j, sfx in enumerate(self._dirs()):
                ps = {k[: -len(f"_l{layer}{sfx}")]: v for k, v in params.items() if k.endswith(f"_l{layer}{sfx}")}
                gi = affine(x, ps["weight_ih"], ps.get("bias_ih"))  # all steps at once: (L, N, G*H)

                def body(c: Carry, g: jax.Array, ps: Params = ps) -> tuple[Carry, jax.Array]:
                    c = step(mode, g, c, ps["weight_hh"], ps.get("bias_hh"), ps.get("weight_hr"))
                    return c, c[0]

                carry = carries[layer * len(self._dirs()) + j]
                final, ys = jax.lax.scan(body, carry, gi, reverse=sfx == "_reverse")
                outs.append(ys)
                finals.append(final)
            x = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=-1)
            if layer < a.num_layers - 1 and a.dropout > 0:
                k = None if key is None else jax.random.fold_in(key, layer)
                x = dropout_fn(self, a.dropout, x, training, k)
        out = x[:, 0] if unbatched else (jnp.swapaxes(x, 0, 1) if a.batch_first else x)
        h_n = jnp.stack([f[0] for f in finals])
        if unbatched:
            h_n = h_n[:, 0]
        if mode != "LSTM":
            return (out, h_n), state
        c_n = jnp.stack([f[1] for f in finals])
        return (out, (h_n, c_n[:, 0] if unbatched else c_n)), state


_DOC = """{what}, as ``torch.nn.{name}`` (same arguments, order and defaults).

    Args: ``input_size``, ``hidden_size`` H, ``num_layers=1``{extra_args}, ``bias=True``,
    ``batch_first=False``, ``dropout=0.0`` (after every layer but the last, in training; needs
    ``key``), ``bidirectional=False`` (D = 2 directions){proj}.

    Params (torch's keys, per layer ``k`` and ``_reverse`` for the backward direction):
    ``weight_ih_l{{k}} ({g}*H, in_k)``, ``weight_hh_l{{k}} ({g}*H, {hh})``, ``bias_ih_l{{k}}``,
    ``bias_hh_l{{k}} ({g}*H,)``{proj_keys}; all ``U(±1/sqrt(H))`` as torch. ``in_0 = input_size``,
    later layers take ``D * {hout}``.

    Call: ``apply(params, state, input, hx=None, *, train=False, key=None)`` ->
    ``((output, {hn}), state)``, as torch's forward. Shapes: ``input (L, N, input_size)``
    (``(N, L, input_size)`` with ``batch_first``; unbatched ``(L, input_size)``) -> ``output``
    ``(L, N, D*{hout})`` (batch-first likewise); ``{hx_doc}`` ``(D*num_layers, N, {hout})``{c_doc}
    (without N when unbatched; zeros when ``hx`` is omitted). Packed sequences are not supported.

    Raises:
      ValueError: a bad hyperparameter, a wrong input or hidden-state shape, training with
        ``dropout > 0`` and no ``key``, or a traced ``train``.
    """


@register(name="nn.RNN")
class RNN(_RNNBase):
    __doc__ = _DOC.format(
        what="Elman RNN ``h_t = tanh(W_ih x_t + b_ih + W_hh h_(t-1) + b_hh)``", name="RNN",
        extra_args=", ``nonlinearity='tanh'`` (or ``'relu'``)", proj="", g=1, hh="H",
        proj_keys="", hout="H", hn="h_n", hx_doc="hx``/``h_n", c_doc="",
    )  # fmt: skip

    input_size: int
    hidden_size: int
    num_layers: int = 1
    nonlinearity: str = "tanh"
    bias: bool = True
    batch_first: bool = False
    dropout: float = 0.0
    bidirectional: bool = False

    def mode(self) -> str:
        return check_mode(self, self.nonlinearity)


@register(name="nn.LSTM")
class LSTM(_RNNBase):
    __doc__ = _DOC.format(
        what="Long short-term memory (gates i, f, g, o)", name="LSTM", extra_args="",
        proj=", ``proj_size=0`` (> 0: ``h`` is projected to ``proj_size`` P)", g=4, hh="P or H",
        proj_keys=", ``weight_hr_l{k} (P, H)`` when ``proj_size > 0``", hout="P or H",
        hn="(h_n, c_n)", hx_doc="hx = (h_0, c_0)``: ``h_0``/``h_n",
        c_doc=", ``c_0``/``c_n (D*num_layers, N, H)``",
    )  # fmt: skip

    input_size: int
    hidden_size: int
    num_layers: int = 1
    bias: bool = True
    batch_first: bool = False
    dropout: float = 0.0
    bidirectional: bool = False
    proj_size: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check(
            0 <= self.proj_size < self.hidden_size,
            self,
            f"proj_size must be >= 0 and smaller than hidden_size ({self.hidden_size}), got {self.proj_size}.",
        )

    def mode(self) -> str:
        return "LSTM"

    def _proj(self) -> int:
        return self.proj_size


@register(name="nn.GRU")
class GRU(_RNNBase):
    __doc__ = _DOC.format(
        what="Gated recurrent unit (gates r, z, n)", name="GRU", extra_args="", proj="", g=3,
        hh="H", proj_keys="", hout="H", hn="h_n", hx_doc="hx``/``h_n", c_doc="",
    )  # fmt: skip

    input_size: int
    hidden_size: int
    num_layers: int = 1
    bias: bool = True
    batch_first: bool = False
    dropout: float = 0.0
    bidirectional: bool = False

    def mode(self) -> str:
        return "GRU"
