"""docs/layers.md lists every torch.nn class, and every jaxnets twin it names exists."""

from __future__ import annotations

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

from jaxnets import nn

DOC = Path(__file__).parents[2] / "docs" / "layers.md"


def _rows() -> dict[str, str]:
    rows = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"\| (\w+) \| (.+?) \|", line)
        if m and m.group(1) != "torch":
            rows[m.group(1)] = m.group(2)
    return rows


def test_every_torch_nn_class_has_a_row():
    torch_classes = {
        n for n in dir(torch.nn) if isinstance(getattr(torch.nn, n), type) and issubclass(getattr(torch.nn, n), torch.nn.Module)
    }
    missing = sorted(torch_classes - set(_rows()))
    assert not missing, f"docs/layers.md has no row for {missing}"


def test_every_named_twin_exists_and_has_torchs_name():
    for torch_name, twin in _rows().items():
        names = re.findall(r"`nn\.(\w+)`", twin)
        for name in names:
            assert hasattr(nn, name), f"docs/layers.md: {torch_name} -> nn.{name}, which does not exist"
        if names:
            assert names == [torch_name], f"{torch_name}: twin {names} should have torch's name"


def test_the_loss_expressions_equal_torchs_losses():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((6, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 6)
    pred, target = rng.standard_normal((2, 6, 4)).astype(np.float32) * 2
    probs = 1 / (1 + np.exp(-logits))
    bits = (rng.random((6, 4)) > 0.5).astype(np.float32)
    log_probs = np.array(jax.nn.log_softmax(logits, axis=-1))
    target_probs = np.array(jax.nn.softmax(pred, axis=-1))
    t = torch.from_numpy
    T = torch.nn
    checks = {
        "CrossEntropyLoss": (optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), T.CrossEntropyLoss()(t(logits), t(labels))),
        "NLLLoss": (-jnp.take_along_axis(log_probs, labels[:, None], 1).mean(), T.NLLLoss()(t(log_probs), t(labels))),
        "BCELoss": (
            -(bits * jnp.maximum(jnp.log(probs), -100) + (1 - bits) * jnp.maximum(jnp.log1p(-probs), -100)).mean(),
            T.BCELoss()(t(probs), t(bits)),
        ),
        "BCEWithLogitsLoss": (optax.sigmoid_binary_cross_entropy(logits, bits).mean(), T.BCEWithLogitsLoss()(t(logits), t(bits))),
        "MSELoss": (optax.squared_error(pred, target).mean(), T.MSELoss()(t(pred), t(target))),
        "L1Loss": (jnp.abs(pred - target).mean(), T.L1Loss()(t(pred), t(target))),
        "SmoothL1Loss": (optax.huber_loss(pred, target, delta=0.5).mean() / 0.5, T.SmoothL1Loss(beta=0.5)(t(pred), t(target))),
        "HuberLoss": (optax.huber_loss(pred, target, delta=1.5).mean(), T.HuberLoss(delta=1.5)(t(pred), t(target))),
        "KLDivLoss": (optax.kl_divergence(log_probs, target_probs).mean(), T.KLDivLoss(reduction="batchmean")(t(log_probs), t(target_probs))),
        "TripletMarginLoss": (
            optax.losses.triplet_margin_loss(pred, target, logits).mean(), T.TripletMarginLoss()(t(pred), t(target), t(logits)),
        ),
    }  # fmt: skip
    rows = _rows()
    for name, (ours, theirs) in checks.items():
        assert rows[name] == "not a layer", name
        np.testing.assert_allclose(float(ours), float(theirs), rtol=1e-5, err_msg=name)

