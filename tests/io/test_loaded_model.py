"""``LoadedModel.predict``: the loaded model's eval-mode apply, compiled once per input shape
(jaxnets/io/loaded_model.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnets
from jaxnets import nn

TRACES: list[tuple[int, ...]] = []


@jaxnets.register(name="tests.io.loaded.Counted")
@dataclass(frozen=True)
class Counted(nn.Module):
    """Doubles its input; records each time jax traces its apply (once per compilation)."""

    def apply(self, params, state, x, *, train=False, key=None):  # type: ignore[no-untyped-def]
        TRACES.append(tuple(x.shape))
        return x * 2, state


def _trained_bn_model(path: Path) -> tuple[nn.Module, dict, dict]:
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    params, state = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (16, 4))
    _, state = model.apply(params, state, x, train=True)  # running stats differ from init's
    jaxnets.save(path, model, params, state)
    return model, params, state


def test_predict_is_apply_in_eval_mode(tmp_path: Path) -> None:
    model, params, state = _trained_bn_model(tmp_path / "m.jnet")
    loaded = jaxnets.load(tmp_path / "m.jnet")
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    expected, _ = model.apply(params, state, x, train=False)
    np.testing.assert_allclose(loaded.predict(x), expected, rtol=1e-6, atol=1e-6)
    train_mode, _ = model.apply(params, state, x, train=True)
    assert not np.allclose(loaded.predict(x), train_mode)  # eval mode is what makes them equal


def test_predict_compiles_once_per_input_shape(tmp_path: Path) -> None:
    jaxnets.save(tmp_path / "c.jnet", Counted(), {}, {})
    loaded = jaxnets.load(tmp_path / "c.jnet")
    TRACES.clear()
    for _ in range(3):
        np.testing.assert_array_equal(loaded.predict(jnp.ones((2, 3))), 2 * np.ones((2, 3)))
    loaded.predict(jnp.ones((5, 3)))
    loaded.predict(jnp.ones((2, 3)))
    assert TRACES == [(2, 3), (5, 3)]


def test_params_are_arguments_not_constants_of_the_compiled_program(tmp_path: Path) -> None:
    _trained_bn_model(tmp_path / "m.jnet")
    loaded = jaxnets.load(tmp_path / "m.jnet")
    traced = loaded._predict.trace(loaded.params, loaded.state, jnp.ones((1, 4)))
    assert traced.jaxpr.consts == []  # no weight is baked into the XLA program


def test_weights_only_file_has_nothing_to_predict_with(tmp_path: Path) -> None:
    jaxnets.save_state_dict(tmp_path / "w.jnet", {"w": np.ones(2)})
    with pytest.raises(ValueError, match=r"w\.jnet: a weights-only file has no model.*load_state_dict"):
        jaxnets.load(tmp_path / "w.jnet").predict(np.ones(2))


def test_loading_never_turns_on_the_persistent_compilation_cache(tmp_path: Path) -> None:
    _trained_bn_model(tmp_path / "m.jnet")
    jaxnets.load(tmp_path / "m.jnet").predict(np.ones((1, 4), np.float32))
    assert jax.config.jax_compilation_cache_dir is None


_CACHED = """
import sys
import jax
jax.config.update("jax_compilation_cache_dir", sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
import numpy as np
import jaxnets
print(jaxnets.load(sys.argv[2]).predict(np.ones((3, 4), np.float32)).shape)
"""


@pytest.mark.slow
def test_persistent_compilation_cache_as_documented_keeps_the_compiled_predict(tmp_path: Path) -> None:
    # docs/saving_loading.md, "Fast predictions": the user turns jax's cache on; a second process
    # then reads the compiled program instead of compiling (and writing) it again.
    _trained_bn_model(tmp_path / "m.jnet")
    cache = tmp_path / "cache"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    written = []
    for _ in range(2):
        r = subprocess.run([sys.executable, "-c", _CACHED, str(cache), str(tmp_path / "m.jnet")],
                           capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
        assert r.returncode == 0 and r.stdout.strip() == "(3, 2)", r.stderr[-2000:]
        programs = {p.name: p.stat().st_mtime_ns for p in cache.iterdir() if p.name.startswith("jit_predict-")}
        assert len(programs) == 1, sorted(p.name for p in cache.iterdir())  # one program: predict
        written.append(programs)
    assert written[0] == written[1]  # the second process compiled nothing new
