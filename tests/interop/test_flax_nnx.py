"""flax.nnx models <-> PyTorch: a CNN and a transformer block, each against the same torch module."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import randomize_torch, to_torch_sd

import jaxnets
from jaxnets import JaxnetsError, StateDictError
from jaxnets.cli.convert import convert
from jaxnets.interop import load_nnx_state_dict, nnx_state_dict

nnx = pytest.importorskip("flax.nnx", reason="flax is optional: pip install 'jaxnets[flax]'")
torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")
tnn = torch.nn


class FlaxCNN(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        pad = ((1, 1), (1, 1))
        self.conv1 = nnx.Conv(3, 8, (3, 3), padding=pad, rngs=rngs)
        self.bn1 = nnx.BatchNorm(8, use_running_average=True, rngs=rngs)
        self.conv2 = nnx.Conv(8, 4, (3, 3), strides=(2, 2), padding=pad, rngs=rngs)
        self.head = nnx.Sequential(nnx.Linear(64, 16, rngs=rngs), nnx.relu, nnx.Linear(16, 10, rngs=rngs))

    def __call__(self, x: jax.Array) -> jax.Array:  # x: (N, H, W, C), flax's NHWC
        x = nnx.relu(self.bn1(self.conv1(x)))
        x = nnx.relu(self.conv2(x))
        return self.head(x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1))  # torch's (C, H, W) order


class TorchCNN(tnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = tnn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = tnn.BatchNorm2d(8)
        self.conv2 = tnn.Conv2d(8, 4, 3, stride=2, padding=1)
        self.head = tnn.Sequential(tnn.Linear(64, 16), tnn.ReLU(), tnn.Linear(16, 10))

    def forward(self, x):  # x: (N, C, H, W)
        x = torch.relu(self.bn1(self.conv1(x)))
        return self.head(torch.relu(self.conv2(x)).flatten(1))


VOCAB, D, H = 50, 16, 4


class FlaxBlock(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.emb = nnx.Embed(VOCAB, D, rngs=rngs)
        self.ln1 = nnx.LayerNorm(D, epsilon=1e-5, rngs=rngs)  # torch's default eps
        self.attn = nnx.MultiHeadAttention(num_heads=H, in_features=D, decode=False, rngs=rngs)
        self.ln2 = nnx.LayerNorm(D, epsilon=1e-5, rngs=rngs)
        self.fc1 = nnx.Linear(D, 4 * D, rngs=rngs)
        self.fc2 = nnx.Linear(4 * D, D, rngs=rngs)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        x = self.emb(tokens)
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(jax.nn.gelu(self.fc1(self.ln2(x)), approximate=False))


class TorchBlock(tnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = tnn.Embedding(VOCAB, D)
        self.ln1 = tnn.LayerNorm(D)
        self.attn = tnn.MultiheadAttention(D, H, batch_first=True)
        self.ln2 = tnn.LayerNorm(D)
        self.fc1 = tnn.Linear(D, 4 * D)
        self.fc2 = tnn.Linear(4 * D, D)

    def forward(self, tokens):
        x = self.emb(tokens)
        y = self.ln1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.ln2(x))))


def _get(var):  # Variable.get_value/set_value arrived in flax 0.12.x; .value is older (the floor)
    return var.get_value() if hasattr(var, "get_value") else var.value


def _put(var, x) -> None:
    if hasattr(var, "set_value"):
        var.set_value(x)
    else:
        var.value = x


def _randomize_flax(module, seed: int = 0) -> None:
    """Random values in every Param and BatchStat (variances positive): zeros would hide mistakes."""
    rng = np.random.default_rng(seed)
    for path, var in nnx.iter_graph(module):
        if isinstance(var, (nnx.Param, nnx.BatchStat)):
            shape = _get(var).shape
            x = rng.random(shape) + 0.5 if path[-1] == "var" else rng.normal(size=shape) * 0.5
            _put(var, jnp.asarray(x, jnp.float32))


CASES = {
    "cnn": (FlaxCNN, TorchCNN, lambda: np.random.default_rng(1).normal(size=(2, 3, 8, 8)).astype(np.float32)),
    "block": (FlaxBlock, TorchBlock, lambda: np.random.default_rng(1).integers(0, VOCAB, (2, 7))),
}


def _outputs(case: str, flax_model, torch_model) -> tuple[np.ndarray, np.ndarray]:
    x = CASES[case][2]()
    torch_model.eval()
    with torch.no_grad():
        want = torch_model(torch.from_numpy(x)).numpy()
    got = flax_model(jnp.asarray(x.transpose(0, 2, 3, 1) if case == "cnn" else x))
    return np.asarray(got), want


@pytest.mark.parametrize("case", CASES)
def test_a_flax_model_loads_strictly_into_the_torch_model_with_equal_outputs(case):
    flax_cls, torch_cls, _ = CASES[case]
    fm, tm = flax_cls(nnx.Rngs(0)), torch_cls()
    _randomize_flax(fm)
    sd = nnx_state_dict(fm)
    assert list(sd) and set(sd) == set(tm.state_dict())
    tm.load_state_dict(to_torch_sd(sd), strict=True)
    got, want = _outputs(case, fm, tm)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_a_torch_state_dict_loads_into_the_flax_model_with_equal_outputs(case):
    flax_cls, torch_cls, _ = CASES[case]
    fm, tm = flax_cls(nnx.Rngs(0)), torch_cls()
    randomize_torch(tm)
    load_nnx_state_dict(fm, tm.state_dict())
    got, want = _outputs(case, fm, tm)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    back = nnx_state_dict(fm)  # and the way back gives torch's own tensors, bit for bit
    for k, t in tm.state_dict().items():
        if not k.endswith("num_batches_tracked"):  # flax keeps no batch count: written as 0
            np.testing.assert_array_equal(back[k], t.numpy(), err_msg=k)


def test_the_keys_follow_attributes_and_sequential_numbers_its_layers():
    sd = nnx_state_dict(FlaxCNN(nnx.Rngs(0)))
    assert list(sd) == list(TorchCNN().state_dict())  # same names, in definition order
    assert sd["conv1.weight"].shape == (8, 3, 3, 3) and sd["head.0.weight"].shape == (16, 64)
    assert sd["bn1.num_batches_tracked"].dtype == np.int64 and sd["bn1.num_batches_tracked"] == 0


@pytest.mark.parametrize("suffix", [".jnet", ".safetensors", ".pt"])
def test_a_flax_trained_model_written_as_a_file_loads_strictly_in_torch(tmp_path: Path, suffix):
    fm, tm = FlaxCNN(nnx.Rngs(0)), TorchCNN()
    _randomize_flax(fm, seed=3)
    jnet = tmp_path / "model.jnet"
    jaxnets.save_state_dict(jnet, nnx_state_dict(fm), fsync=False)
    path = tmp_path / f"model{suffix}"
    if suffix != ".jnet":
        convert(jnet, path)
    if suffix == ".jnet":
        with jaxnets.open(jnet) as reader:
            sd = to_torch_sd({k: reader[k] for k in reader})
    elif suffix == ".safetensors":
        sd = safetensors_torch.load_file(str(path))
    else:
        sd = torch.load(path, weights_only=True)
    tm.load_state_dict(sd, strict=True)
    got, want = _outputs("cnn", fm, tm)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_torch_model_saved_as_a_jaxnets_file_loads_into_flax(tmp_path: Path):
    fm, tm = FlaxBlock(nnx.Rngs(0)), TorchBlock()
    randomize_torch(tm, seed=5)
    jaxnets.save_state_dict(tmp_path / "block.jnet", tm.state_dict(), fsync=False)
    load_nnx_state_dict(fm, tmp_path / "block.jnet")
    got, want = _outputs("block", fm, tm)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_state_dict_that_does_not_fit_is_refused_whole_and_the_model_left_as_it_was():
    fm = FlaxCNN(nnx.Rngs(0))
    before = nnx_state_dict(fm)
    sd = TorchCNN().state_dict()
    sd["head.2.weight"] = torch.zeros(10, 32)
    del sd["bn1.running_var"]
    sd["fc9.weight"] = torch.zeros(1)
    with pytest.raises(StateDictError, match=r"1 missing, 1 unexpected, 1 misshapen") as e:
        load_nnx_state_dict(fm, sd)
    assert e.value.missing_keys == ["bn1.running_var"] and e.value.unexpected_keys == ["fc9.weight"]
    assert "head.2.weight: shape (10, 32) in the state_dict, (10, 16) in the template" in str(e.value)
    for k, v in nnx_state_dict(fm).items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


def test_strict_false_keeps_the_modules_values_for_missing_entries():
    fm, tm = FlaxCNN(nnx.Rngs(0)), TorchCNN()
    randomize_torch(tm)
    kept = np.array(nnx_state_dict(fm)["conv1.weight"])
    sd = tm.state_dict()
    del sd["conv1.weight"]
    with pytest.warns(jaxnets.JaxnetsWarning, match="conv1.weight"):
        load_nnx_state_dict(fm, sd, strict=False)
    now = nnx_state_dict(fm)
    np.testing.assert_array_equal(now["conv1.weight"], kept)
    np.testing.assert_array_equal(now["conv2.weight"], tm.conv2.weight.detach().numpy())


def test_a_flax_layer_without_a_torch_layout_is_an_error_not_a_guess():
    class Up(nnx.Module):
        def __init__(self, rngs):
            self.up = nnx.ConvTranspose(4, 4, (2, 2), rngs=rngs)

    with pytest.raises(JaxnetsError, match=r"no PyTorch layout rule in jaxnets.interop: up \(ConvTranspose\)"):
        nnx_state_dict(Up(nnx.Rngs(0)))


def test_attention_that_torch_cannot_pack_is_an_error():
    class Cross(nnx.Module):
        def __init__(self, rngs):
            self.attn = nnx.MultiHeadAttention(num_heads=2, in_features=8, qkv_features=4, decode=False, rngs=rngs)

    with pytest.raises(JaxnetsError, match=r"attn: this MultiHeadAttention has no torch.nn.MultiheadAttention layout"):
        nnx_state_dict(Cross(nnx.Rngs(0)))


def test_a_users_own_variables_keep_their_names_and_layout():
    class Scaled(nnx.Module):
        def __init__(self, rngs):
            self.fc = nnx.Linear(3, 2, rngs=rngs)
            self.gain = nnx.Param(jnp.arange(2.0))
            self.count = nnx.BatchStat(jnp.zeros((), jnp.int32))

    m = Scaled(nnx.Rngs(0))
    sd = nnx_state_dict(m)
    # torch's order: a module's own parameters, then its buffers, then its children's entries
    assert list(sd) == ["gain", "count", "fc.weight", "fc.bias"]
    sd = {**sd, "gain": np.array([5.0, 6.0], np.float32)}
    load_nnx_state_dict(m, sd)
    np.testing.assert_array_equal(np.asarray(_get(m.gain)), [5.0, 6.0])
