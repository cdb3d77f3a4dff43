"""Pointwise activation layers with torch.nn's names, arguments and defaults.

None has params or state except :class:`PReLU` (its learnable ``weight``); all keep the input's
shape and dtype. torch's ``inplace=`` is accepted so ported code runs unchanged; it has no effect
(JAX arrays are immutable). Softmax-like layers that work along a dim are in :mod:`.softmax`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxnets.core.registry import register
from jaxnets.nn._utils import check
from jaxnets.nn.module import Key, Module, Output, Params, State

__all__ = [
    "ReLU", "ReLU6", "LeakyReLU", "PReLU", "ELU", "CELU", "SELU", "GELU", "SiLU", "Mish",
    "Hardswish", "Hardsigmoid", "Hardtanh", "Tanh", "Sigmoid", "LogSigmoid", "Softplus",
    "Softsign", "Tanhshrink", "Softshrink", "Hardshrink", "Threshold",
]  # fmt: skip


class _Elementwise(Module):
    """A stateless pointwise layer: subclasses define ``fn``. Shapes: any -> same."""

    def fn(self, x: jax.Array) -> jax.Array:
        raise NotImplementedError

    def apply(
        self, params: Params, state: State, x: Any, *, train: bool = False, key: Key = None
    ) -> Output:
        return self.fn(jnp.asarray(x)), state


def _zero(x: jax.Array) -> jax.Array:
    return jnp.zeros((), x.dtype)


@register(name="nn.ReLU")
class ReLU(_Elementwise):
    """``max(x, 0)``, as ``torch.nn.ReLU``. Shapes: any -> same."""

    inplace: bool = False

    def fn(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(x)


@register(name="nn.ReLU6")
class ReLU6(_Elementwise):
    """``min(max(x, 0), 6)``, as ``torch.nn.ReLU6``. Shapes: any -> same."""

    inplace: bool = False

    def fn(self, x: jax.Array) -> jax.Array:
        return jnp.clip(x, 0, 6).astype(x.dtype)


@register(name="nn.LeakyReLU")
class LeakyReLU(_Elementwise):
    """``x`` if ``x > 0`` else ``negative_slope * x``, as ``torch.nn.LeakyReLU(0.01)``."""

    negative_slope: float = 1e-2
    inplace: bool = False

    def fn(self, x: jax.Array) -> jax.Array:
        return jnp.where(x > 0, x, x * self.negative_slope)


@register(name="nn.PReLU")
class PReLU(Module):
    """LeakyReLU with a learned slope, as ``torch.nn.PReLU(num_parameters=1, init=0.25)``.

    Params: ``weight (num_parameters,)``, filled with ``init``. With one parameter the slope is
    shared; otherwise there is one per channel, on axis 1, as torch (which also rejects 0-d and
    1-d inputs then).
    Shapes: any -> same.

    Raises:
      ValueError: ``num_parameters < 1``, or the channel axis does not hold ``num_parameters``.
    """

    num_parameters: int = 1
    init_value: float = 0.25  # torch's argument ``init``, which would hide Module.init as a field

    def __init__(self, num_parameters: int = 1, init: float = 0.25):
        object.__setattr__(self, "num_parameters", num_parameters)
        object.__setattr__(self, "init_value", float(init))
        check(num_parameters >= 1, self, f"num_parameters must be >= 1, got {num_parameters}.")

    def get_config(self) -> dict[str, Any]:
        return {"num_parameters": self.num_parameters, "init": self.init_value}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PReLU:
        return cls(**config)

    def init(self, key: jax.Array) -> tuple[Params, State]:
        return {"weight": jnp.full((self.num_parameters,), self.init_value, jnp.float32)}, {}

    def apply(
        self, params: Params, state: State, x: Any, *, train: bool = False, key: Key = None
    ) -> Output:
        w = params["weight"]
        if self.num_parameters == 1:
            slope = w.reshape((1,) * x.ndim)
        else:
            check(  # as torch: a 0-d or 1-d input has one channel
                x.ndim >= 2 and x.shape[1] == self.num_parameters,
                self,
                f"expected {self.num_parameters} channels on axis 1 of the input, got shape {x.shape}.",
            )
            slope = w.reshape((1, -1) + (1,) * (x.ndim - 2))
        return jnp.where(x >= 0, x, slope.astype(x.dtype) * x), state


@register(name="nn.ELU")
class ELU(_Elementwise):
    """``x`` if ``x > 0`` else ``alpha * (exp(x) - 1)``, as ``torch.nn.ELU(alpha=1.0)``."""

    alpha: float = 1.0
    inplace: bool = False

    def fn(self, x: jax.Array) -> jax.Array:
        return jnp.where(x > 0, x, self.alpha * jnp.expm1(jnp.minimum(x, 0)))


@register(name="nn.CELU")
class CELU(_Elementwise):
    """``max(0, x) + min(0, alpha * (exp(x / alpha) - 1))``, as ``torch.nn.CELU(alpha=1.0)``."""

    alpha: float = 1.0
    inplace: bool = False

    def fn(self, x: jax.Array) -> jax.Array:
        return jnp.where(x > 0, x, self.alpha * jnp.expm1(jnp.minimum(x, 0) / self.alpha))


@register(name="nn.SELU")
class SELU(_Elementwise):
    """``scale * ELU(x, alpha)`` with the self-normalising constants, as ``torch.nn.SELU``."""

    inplace: bool = False

    def fn(self, x: jax.Array) -> jax.Array:
        return jax.nn.selu(x)


@register(name="nn.GELU")
class GELU(_Elementwise):
    """``x * Phi(x)``, as ``torch.nn.GELU(approximate="none")``; ``"tanh"`` is the tanh
    approximation. Shapes: any -> same.

    Raises:
      ValueError: ``approximate`` is not ``"none"`` or ``"tanh"``.
    """

    approximate: str = "none"

    def __post_init__(self) -> None:
        check(
            self.approximate in ("none", "tanh"),
            self,
            f"approximate must be 'none' or 'tanh', got {self.approximate!r}.",
        )

    def fn(self, x: jax.Array) -> jax.Array:
        return jax.nn.gelu(x, approximate=self.approximate == "tanh")


@register(name="nn.SiLU")
class SiLU(_Elementwise):
    """``x * sigmoid(x)`` (swish), as ``torch.nn.SiLU``. Shapes: any -> same."""

    inplace: bool = False

    def fn(self, x: jax.Array) -> jax.Array:
        return jax.nn.silu(x)


@register(name="nn.Mish")
class Mish(_Elementwise):
    """``x * tanh(softplus(x))``, as ``torch.nn.Mish``. Shapes: any -> same."""

    inplace: bool = False

    def fn(self, x: jax.Array) -> jax.Array:
        return x * jnp.tanh(jax.nn.softplus(x))


@register(name="nn.Hardswish")
class Hardswish(_Elementwise):
    """``x * relu6(x + 3) / 6``, as ``torch.nn.Hardswish`` (MobileNetV3). Shapes: any -> same."""

    inplace: bool = False

    def fn(self, x: jax.Array) -> jax.Array:
        return x * jnp.clip(x + 3, 0, 6) / 6


@register(name="nn.Hardsigmoid")
class Hardsigmoid(_Elementwise):
    """``relu6(x + 3) / 6``, as ``torch.nn.Hardsigmoid``. Shapes: any -> same."""

    inplace: bool = False

    def fn(self, x: jax.Array) -> jax.Array:
        return jnp.clip(x + 3, 0, 6) / 6


@register(name="nn.Hardtanh")
class Hardtanh(_Elementwise):
    """``clip(x, min_val, max_val)``, as ``torch.nn.Hardtanh(-1.0, 1.0)``.

    Raises:
      ValueError: ``max_val <= min_val``.
    """

    min_val: float = -1.0
    max_val: float = 1.0
    inplace: bool = False

    def __post_init__(self) -> None:
        check(self.max_val > self.min_val, self, "max_val must be greater than min_val.")

    def fn(self, x: jax.Array) -> jax.Array:
        return jnp.clip(x, self.min_val, self.max_val).astype(x.dtype)


@register(name="nn.Tanh")
class Tanh(_Elementwise):
    """``tanh(x)``, as ``torch.nn.Tanh``. Shapes: any -> same."""

    def fn(self, x: jax.Array) -> jax.Array:
        return jnp.tanh(x)


@register(name="nn.Sigmoid")
class Sigmoid(_Elementwise):
    """``1 / (1 + exp(-x))``, as ``torch.nn.Sigmoid``. Shapes: any -> same."""

    def fn(self, x: jax.Array) -> jax.Array:
        return jax.nn.sigmoid(x)


@register(name="nn.LogSigmoid")
class LogSigmoid(_Elementwise):
    """``log(sigmoid(x))``, computed stably, as ``torch.nn.LogSigmoid``."""

    def fn(self, x: jax.Array) -> jax.Array:
        return jax.nn.log_sigmoid(x)


@register(name="nn.Softplus")
class Softplus(_Elementwise):
    """``log(1 + exp(beta * x)) / beta``, linear where ``beta * x > threshold``, as
    ``torch.nn.Softplus(beta=1.0, threshold=20.0)``. Shapes: any -> same."""

    beta: float = 1.0
    threshold: float = 20.0

    def fn(self, x: jax.Array) -> jax.Array:
        bx = x * self.beta
        safe = jnp.where(bx > self.threshold, jnp.zeros_like(bx), bx)  # no overflow in the unused branch
        return jnp.where(bx > self.threshold, x, jnp.log1p(jnp.exp(safe)) / self.beta)


@register(name="nn.Softsign")
class Softsign(_Elementwise):
    """``x / (1 + |x|)``, as ``torch.nn.Softsign``."""

    def fn(self, x: jax.Array) -> jax.Array:
        return x / (1 + jnp.abs(x))


@register(name="nn.Tanhshrink")
class Tanhshrink(_Elementwise):
    """``x - tanh(x)``, as ``torch.nn.Tanhshrink``."""

    def fn(self, x: jax.Array) -> jax.Array:
        return x - jnp.tanh(x)


@register(name="nn.Softshrink")
class Softshrink(_Elementwise):
    """``x - lambd`` above ``lambd``, ``x + lambd`` below ``-lambd``, else 0, as
    ``torch.nn.Softshrink(lambd=0.5)``."""

    lambd: float = 0.5

    def fn(self, x: jax.Array) -> jax.Array:
        shrunk = jnp.where(x > self.lambd, x - self.lambd, x + self.lambd)
        return jnp.where(jnp.abs(x) > self.lambd, shrunk, _zero(x))


@register(name="nn.Hardshrink")
class Hardshrink(_Elementwise):
    """``x`` where ``|x| > lambd``, else 0, as ``torch.nn.Hardshrink(lambd=0.5)``."""

    lambd: float = 0.5

    def fn(self, x: jax.Array) -> jax.Array:
        return jnp.where(jnp.abs(x) > self.lambd, x, _zero(x))


@register(name="nn.Threshold")
class Threshold(_Elementwise):
    """``x`` where ``x > threshold``, else ``value``, as ``torch.nn.Threshold(threshold, value)``."""

    threshold: float
    value: float
    inplace: bool = False

    def fn(self, x: jax.Array) -> jax.Array:
        return jnp.where(x > self.threshold, x, jnp.asarray(self.value, x.dtype))
