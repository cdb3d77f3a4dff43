"""flax.linen variables <-> PyTorch: a CNN (Conv, BatchNorm, Dense in nn.Sequential) against torch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import randomize_torch, to_torch_sd

from jaxnets import JaxnetsError, StateDictError
from jaxnets.interop import linen_state_dict, load_linen_state_dict

nn = pytest.importorskip("flax.linen", reason="flax is optional: pip install 'jaxnets[flax]'")
torch = pytest.importorskip("torch")


class LinenCNN(nn.Module):
    def setup(self) -> None:
        self.conv = nn.Conv(8, (3, 3), padding=((1, 1), (1, 1)))
        self.bn = nn.BatchNorm(use_running_average=True)
        self.head = nn.Sequential([nn.Dense(16), nn.relu, nn.Dense(10)])

    def __call__(self, x):  # x: (N, H, W, C)
        x = nn.relu(self.bn(self.conv(x)))
        return self.head(x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1))  # torch's (C, H, W) order


class TorchCNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.head = torch.nn.Sequential(torch.nn.Linear(8 * 6 * 6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.head(x.flatten(1))


X = np.random.default_rng(2).normal(size=(2, 3, 6, 6)).astype(np.float32)
X_NHWC = jnp.asarray(X.transpose(0, 2, 3, 1))


def _init():
    model = LinenCNN()
    variables = model.init(jax.random.key(0), X_NHWC)
    rng = np.random.default_rng(4)
    variables = jax.tree_util.tree_map_with_path(
        lambda p, x: jnp.asarray(rng.random(x.shape) + 0.5 if "var" in str(p[-1]) else rng.normal(size=x.shape), x.dtype),
        variables,
    )
    return model, variables


def _torch_out(tm) -> np.ndarray:
    tm.eval()
    with torch.no_grad():
        return tm(torch.from_numpy(X)).numpy()


def test_linen_variables_load_strictly_into_torch_with_equal_outputs():
    model, variables = _init()
    sd = linen_state_dict(model, variables, X_NHWC)
    tm = TorchCNN()
    assert list(sd) == list(tm.state_dict())
    tm.load_state_dict(to_torch_sd(sd), strict=True)
    np.testing.assert_allclose(np.asarray(model.apply(variables, X_NHWC)), _torch_out(tm), rtol=1e-5, atol=1e-5)


def test_a_torch_state_dict_becomes_linen_variables_with_equal_outputs():
    model, variables = _init()
    tm = TorchCNN()
    randomize_torch(tm)
    new = load_linen_state_dict(model, variables, tm.state_dict(), X_NHWC)
    assert jax.tree.structure(new) == jax.tree.structure(jax.tree.map(lambda x: x, dict(variables)))
    np.testing.assert_allclose(np.asarray(model.apply(new, X_NHWC)), _torch_out(tm), rtol=1e-5, atol=1e-5)
    # the template is not modified
    assert not np.array_equal(np.asarray(variables["params"]["conv"]["bias"]), tm.conv.bias.detach().numpy())


def test_a_misshapen_torch_state_dict_is_refused_with_the_full_report():
    model, variables = _init()
    sd = TorchCNN().state_dict()
    sd["head.2.weight"] = torch.zeros(3, 16)
    with pytest.raises(StateDictError, match=r"head.2.weight: shape \(3, 16\) in the state_dict, \(10, 16\)"):
        load_linen_state_dict(model, variables, sd, X_NHWC)


def test_a_linen_layer_without_a_torch_layout_is_an_error():
    class Up(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.ConvTranspose(4, (2, 2))(x)

    x = jnp.zeros((1, 4, 4, 3))
    variables = Up().init(jax.random.key(0), x)
    with pytest.raises(JaxnetsError, match=r"ConvTranspose_0/kernel \(ConvTranspose\)"):
        linen_state_dict(Up(), variables, x)
