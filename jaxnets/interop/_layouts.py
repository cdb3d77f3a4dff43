"""Per-layer layout rules between flax's (and equinox's) arrays and PyTorch's state_dict entries.

A rule is a pair of pure functions over one layer's arrays, with no flax import:

* ``to_torch(v) -> {torch name: np.ndarray}`` from the layer's flax variables ``v``
  (``{"kernel": ..., "bias": ...}``; nested for attention: ``{"query": {"kernel": ...}}``);
* ``from_torch(t, like) -> v`` back, given the layer's current variables ``like`` for the
  shapes a state_dict does not carry (attention's number of heads).

The layouts (flax is channels-last, PyTorch channels-first; see docs/compatibility.md):

=============  =====================================  ==========================================
flax           flax arrays                            PyTorch
=============  =====================================  ==========================================
Linear/Dense   kernel ``(in, out)``, bias             weight ``(out, in)``, bias
Conv (N-d)     kernel ``(*window, in/groups, out)``   weight ``(out, in/groups, *window)``
BatchNorm      scale, bias, mean, var                 weight, bias, running_mean, running_var,
                                                      num_batches_tracked (written 0, read and
                                                      dropped: flax does not count batches)
LayerNorm      scale, bias                            weight, bias
Embed          embedding ``(num, features)``          weight ``(num, features)``
MultiHead-     query/key/value kernel ``(E, H, D)``,  in_proj_weight ``(3E, E)``,
Attention      bias ``(H, D)``; out kernel            in_proj_bias ``(3E,)``, out_proj.weight
               ``(H, D, E)``, bias ``(E,)``           ``(E, E)``, out_proj.bias ``(E,)``
eqx Conv       weight, bias ``(out, 1, ..., 1)``      weight, bias ``(out,)``
eqx BatchNorm  weight, bias; State (mean, var)        weight, bias, running_mean, running_var,
                                                      num_batches_tracked (as flax's)
=============  =====================================  ==========================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

__all__ = ["Rule", "RULES", "NUM_BATCHES_TRACKED"]

Vars = Mapping[str, Any]
NUM_BATCHES_TRACKED = "num_batches_tracked"


class Rule(NamedTuple):
    """How one kind of layer maps to PyTorch (see the module docstring)."""

    to_torch: Callable[[Vars], dict[str, np.ndarray]]
    from_torch: Callable[[Vars, Vars], dict[str, Any]]


def _np(x: Any) -> np.ndarray:
    return np.asarray(x)


def _renamed(pairs: tuple[tuple[str, str], ...]) -> Rule:
    """A rule that only renames (flax name, torch name) pairs; absent optional entries stay absent."""

    def to_torch(v: Vars) -> dict[str, np.ndarray]:
        return {t: _np(v[f]) for f, t in pairs if f in v}

    def from_torch(t: Vars, like: Vars) -> dict[str, Any]:
        return {f: t[name] for f, name in pairs if f in like}

    return Rule(to_torch, from_torch)


def _linear_to(v: Vars) -> dict[str, np.ndarray]:
    out = {"weight": np.ascontiguousarray(_np(v["kernel"]).T)}
    if "bias" in v:
        out["bias"] = _np(v["bias"])
    return out


def _linear_from(t: Vars, like: Vars) -> dict[str, Any]:
    out = {"kernel": jnp.transpose(t["weight"])}
    if "bias" in like:
        out["bias"] = t["bias"]
    return out


def _conv_to(v: Vars) -> dict[str, np.ndarray]:
    k = _np(v["kernel"])
    n = k.ndim  # (*window, in/groups, out) -> (out, in/groups, *window)
    out = {"weight": np.ascontiguousarray(k.transpose(n - 1, n - 2, *range(n - 2)))}
    if "bias" in v:
        out["bias"] = _np(v["bias"])
    return out


def _conv_from(t: Vars, like: Vars) -> dict[str, Any]:
    w = t["weight"]
    n = w.ndim
    out = {"kernel": jnp.transpose(w, (*range(2, n), 1, 0))}
    if "bias" in like:
        out["bias"] = t["bias"]
    return out


_BN = (("scale", "weight"), ("bias", "bias"), ("mean", "running_mean"), ("var", "running_var"))


def _batchnorm_to(v: Vars) -> dict[str, np.ndarray]:
    out = _renamed(_BN).to_torch(v)
    out[NUM_BATCHES_TRACKED] = np.zeros((), np.int64)  # torch's dtype; flax keeps no count
    return out


_QKV = ("query", "key", "value")


def _mha_to(v: Vars) -> dict[str, np.ndarray]:
    def rows(kernel: Any) -> np.ndarray:  # (E, H, D) -> (H*D, E): row h*D + d, as torch's
        k = _np(kernel)
        return k.reshape(k.shape[0], -1).T

    out = {"in_proj_weight": np.concatenate([rows(v[p]["kernel"]) for p in _QKV])}
    if "bias" in v["query"]:
        out["in_proj_bias"] = np.concatenate([_np(v[p]["bias"]).reshape(-1) for p in _QKV])
    ok = _np(v["out"]["kernel"])  # (H, D, E) -> (E, H*D)
    out["out_proj.weight"] = np.ascontiguousarray(ok.reshape(-1, ok.shape[-1]).T)
    if "bias" in v["out"]:
        out["out_proj.bias"] = _np(v["out"]["bias"])
    return out


def _mha_from(t: Vars, like: Vars) -> dict[str, Any]:
    e, h, d = like["query"]["kernel"].shape
    ws = jnp.split(t["in_proj_weight"], 3)
    out: dict[str, Any] = {}
    for i, p in enumerate(_QKV):
        out[p] = {"kernel": jnp.transpose(ws[i]).reshape(e, h, d)}
        if "bias" in like[p]:
            out[p]["bias"] = jnp.split(t["in_proj_bias"], 3)[i].reshape(h, d)
    out["out"] = {"kernel": jnp.transpose(t["out_proj.weight"]).reshape(h, d, -1)}
    if "bias" in like["out"]:
        out["out"]["bias"] = t["out_proj.bias"]
    return out


def _eqx_conv_to(v: Vars) -> dict[str, np.ndarray]:
    out = {"weight": _np(v["weight"])}
    if "bias" in v:  # equinox keeps (out, 1, ..., 1) to broadcast over the window; torch (out,)
        out["bias"] = _np(v["bias"]).reshape(-1)
    return out


def _eqx_conv_from(t: Vars, like: Vars) -> dict[str, Any]:
    out = {"weight": t["weight"]}
    if "bias" in like:
        out["bias"] = jnp.reshape(t["bias"], like["bias"].shape)
    return out


_EQX_BN = (("weight", "weight"), ("bias", "bias"), ("running_mean", "running_mean"), ("running_var", "running_var"))


def _eqx_batchnorm_to(v: Vars) -> dict[str, np.ndarray]:
    out = _renamed(_EQX_BN).to_torch(v)
    out[NUM_BATCHES_TRACKED] = np.zeros((), np.int64)
    return out


RULES: dict[str, Rule] = {
    "linear": Rule(_linear_to, _linear_from),
    "conv": Rule(_conv_to, _conv_from),
    "batchnorm": Rule(_batchnorm_to, _renamed(_BN).from_torch),
    "layernorm": _renamed((("scale", "weight"), ("bias", "bias"))),
    "embed": _renamed((("embedding", "weight"),)),
    "mha": Rule(_mha_to, _mha_from),
    # equinox: weights already in torch's layout; a conv bias is (out, 1, ..., 1); BatchNorm's
    # running statistics live in an eqx.nn.State and come here as running_mean/running_var.
    "eqx_conv": Rule(_eqx_conv_to, _eqx_conv_from),
    "eqx_batchnorm": Rule(_eqx_batchnorm_to, _renamed(_EQX_BN).from_torch),
}
