"""optax's optimizers and schedules, recorded as configs so a model file can restore them.

``jaxnets.optim.adam(3e-4)`` computes exactly what ``optax.adam(3e-4)`` computes and is accepted
wherever optax wants a ``GradientTransformation``; unlike optax's closures it is a frozen,
registered dataclass of its arguments, so ``jaxnets.to_config(opt)`` stores it as JSON and
``jaxnets.from_config`` rebuilds it without the training script. See docs/optimizers.md.
"""

from jaxnets.optim.alias import adafactor, adagrad, adam, adamw, lion, momentum, nadam, rmsprop, sgd
from jaxnets.optim.base import Config, ScalarOrSchedule, Schedule, Transform
from jaxnets.optim.schedules import (
    constant_schedule,
    cosine_decay_schedule,
    exponential_decay,
    join_schedules,
    linear_schedule,
    piecewise_constant_schedule,
    polynomial_schedule,
    warmup_cosine_decay_schedule,
    warmup_exponential_decay_schedule,
)
from jaxnets.optim.transforms import (
    add_decayed_weights,
    chain,
    clip,
    clip_by_global_norm,
    identity,
    scale,
    scale_by_adam,
    scale_by_learning_rate,
    trace,
)

__all__ = [
    "Config",
    "ScalarOrSchedule",
    "Schedule",
    "Transform",
    "adafactor",
    "adagrad",
    "adam",
    "adamw",
    "add_decayed_weights",
    "chain",
    "clip",
    "clip_by_global_norm",
    "constant_schedule",
    "cosine_decay_schedule",
    "exponential_decay",
    "identity",
    "join_schedules",
    "linear_schedule",
    "lion",
    "momentum",
    "nadam",
    "piecewise_constant_schedule",
    "polynomial_schedule",
    "rmsprop",
    "scale",
    "scale_by_adam",
    "scale_by_learning_rate",
    "sgd",
    "trace",
    "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule",
]
