"""The ``jaxnets`` command, driven through a subprocess as a user would run it.

References: files written by ``jaxnets.save`` / ``CheckpointManager`` in this process, PyTorch
(``torch.save`` / ``torch.load(weights_only=True)``) and safetensors' own readers and writers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxnets
from jaxnets import nn, optim

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, "-m", "jaxnets", *map(str, args)], capture_output=True, text=True, env=env, timeout=120
    )


def _model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from jaxnets.checkpoint import CheckpointManager

    d = tmp_path_factory.mktemp("cli")
    model = _model()
    params, state = model.init(jax.random.key(0))
    opt = optim.adam(1e-3)
    jaxnets.io.save(d / "model.jnet", model, params, state, opt_state=opt.init(params), optimizer=opt,
                    metadata={"note": "digits v1"})
    with CheckpointManager(d / "ckpt", async_save=False) as mgr:
        for step in (10, 20):
            mgr.save(step, params=params, state=state, opt_state=opt.init(params), model=model,
                     optimizer=opt, metrics={"loss": 1.0 / step, "accuracy": 0.25})
    sd = {
        "fc.weight": torch.randn(3, 4, generator=torch.Generator().manual_seed(0)).bfloat16(),
        "fc.bias": torch.tensor([1.0, -2.0, 3.5]),
        "bn.num_batches_tracked": torch.tensor(7),
    }
    torch.save(sd, d / "a.pt")
    changed = dict(sd, **{"fc.bias": sd["fc.bias"] + torch.tensor([0.0, 0.5, 0.0]), "new.weight": torch.zeros(2)})
    changed["bn.num_batches_tracked"] = torch.tensor(7, dtype=torch.int32)
    del changed["fc.weight"]
    changed["fc.weight"] = torch.zeros(4, 3)
    safetensors_torch.save_file(changed, d / "b.safetensors")
    return {"model": d / "model.jnet", "ckpt": d / "ckpt", "pt": d / "a.pt", "st": d / "b.safetensors", "dir": d}


# --- inspect --------------------------------------------------------------------------------------
def test_inspect_model_file_shows_architecture_keys_counts_and_metadata(files: dict[str, Path]) -> None:
    r = cli("inspect", files["model"])
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "nn.Conv2d(in_channels=1, out_channels=4, kernel_size=3, padding=1),  # 0" in out
    assert "optim.adam(learning_rate=0.001)" in out
    assert "'note': 'digits v1'" in out
    assert "0.weight  (4, 1, 3, 3)  float32" in out
    assert "1.running_mean" in out and "1.num_batches_tracked" in out
    # 4*1*3*3 + 4 + 4 + 4 + 10*256 + 10 parameters, 2618 * 4 bytes.
    assert "params:            2,618 values in 6 tensors, 10.2 KiB" in out
    assert "0.mu.4.weight" in out  # the optimizer state's entries


def test_inspect_reads_the_header_only(files: dict[str, Path], tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.jnet"
    corrupt.write_bytes(files["model"].read_bytes())
    with jaxnets.open(corrupt) as reader:
        entry = reader.entries()["4.weight"]
        start = reader._header.data_start + entry.offset
    with open(corrupt, "r+b") as f:  # flip tensor bytes: any read of that tensor fails its checksum
        f.seek(start)
        f.write(b"\xff" * 64)
    with pytest.raises(jaxnets.FileFormatError):
        jaxnets.io.load(corrupt)
    r = cli("inspect", corrupt)
    assert r.returncode == 0, r.stderr
    assert "4.weight  (10, 256)     float32" in r.stdout


def test_inspect_checkpoint_lists_steps_metrics_and_tree_without_array_data(files: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(files["ckpt"], ckpt)
    for step_dir in ckpt.iterdir():  # no array data at all: inspect must not need it
        shutil.rmtree(step_dir / "arrays")
    r = cli("inspect", ckpt)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "steps: 2 (latest 20); showing step 20" in out
    lines = [line.split() for line in out.splitlines()]
    assert ["10", "0.1", "0.25"] in lines and ["20", "0.05", "0.25", "<-", "shown"] in lines
    assert "nn.BatchNorm2d(num_features=4)" in out
    assert "0.weight  (4, 1, 3, 3)  float32" in out
    assert "1.running_var" in out


def test_inspect_step_directory_shows_that_step(files: dict[str, Path]) -> None:
    r = cli("inspect", files["ckpt"] / "10")
    assert r.returncode == 0, r.stderr
    assert "showing step 10" in r.stdout


def test_inspect_torch_and_safetensors_files(files: dict[str, Path]) -> None:
    r = cli("inspect", files["pt"])
    assert r.returncode == 0, r.stderr
    assert "fc.weight               (3, 4)  bfloat16" in r.stdout
    assert "bn.num_batches_tracked  ()      int64" in r.stdout
    r = cli("inspect", files["st"])
    assert r.returncode == 0, r.stderr
    assert "new.weight" in r.stdout and "int32" in r.stdout


# --- diff -----------------------------------------------------------------------------------------
def test_diff_lists_added_removed_changed_and_max_abs_difference(files: dict[str, Path]) -> None:
    r = cli("diff", files["pt"], files["st"])
    assert r.returncode == 1, r.stderr
    out = r.stdout
    assert "added (in B, not in A): 1\n  + new.weight  (2,) float32" in out
    assert "shape changed: 1\n  ~ fc.weight  (3, 4) -> (4, 3)" in out
    assert "dtype changed: 1\n  ~ bn.num_batches_tracked  int64 -> int32" in out
    assert "fc.bias  0.5" in out  # max |A - B| of the one changed value
    assert out.rstrip().endswith("different")


def test_diff_of_a_model_file_and_its_checkpoint_is_identical(files: dict[str, Path]) -> None:
    r = cli("diff", files["model"], files["ckpt"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "values: 9 of 9 common tensors equal" in r.stdout
    assert r.stdout.rstrip().endswith("identical")


# --- convert --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_convert_round_trip_through_safetensors_and_torch_is_bit_exact(files: dict[str, Path], tmp_path: Path) -> None:
    st, pt, back = tmp_path / "m.safetensors", tmp_path / "m.pt", tmp_path / "back.jnet"
    for src, dst in ((files["model"], st), (st, pt), (pt, back)):
        r = cli("convert", src, dst)
        assert r.returncode == 0, r.stderr
    loaded = jaxnets.io.load(files["model"])
    original = jaxnets.state_dict(loaded.params, loaded.state)
    # Each format read back by its own library.
    from_st = safetensors_torch.load_file(st)
    from_pt = torch.load(pt, weights_only=True)
    with jaxnets.open(back) as reader:
        from_back = {k: reader[k] for k in reader}
    assert list(from_back) == list(original)  # the model's (PyTorch's) key order survives safetensors
    for k, v in original.items():
        assert np.array_equal(from_st[k].numpy(), v) and from_st[k].numpy().dtype == v.dtype, k
        assert np.array_equal(from_pt[k].numpy(), v), k
        assert np.array_equal(from_back[k], v) and from_back[k].dtype == v.dtype, k


@pytest.mark.slow
def test_convert_keeps_bfloat16_bits(files: dict[str, Path], tmp_path: Path) -> None:
    st, pt = tmp_path / "a.safetensors", tmp_path / "a2.pt"
    assert cli("convert", files["pt"], st).returncode == 0
    assert cli("convert", st, pt).returncode == 0
    want = torch.load(files["pt"], weights_only=True)
    for got in (safetensors_torch.load_file(st), torch.load(pt, weights_only=True)):
        assert got["fc.weight"].dtype == torch.bfloat16
        assert torch.equal(got["fc.weight"].view(torch.int16), want["fc.weight"].view(torch.int16))
        assert got["bn.num_batches_tracked"].shape == () and got["bn.num_batches_tracked"].dtype == torch.int64


def test_convert_refuses_to_overwrite_without_force(files: dict[str, Path], tmp_path: Path) -> None:
    dst = tmp_path / "exists.safetensors"
    dst.write_bytes(b"keep me")
    r = cli("convert", files["pt"], dst)
    assert r.returncode == 2
    assert "--force" in r.stderr and dst.read_bytes() == b"keep me"


def test_convert_shows_progress_when_asked_and_not_by_default_off_a_terminal(files: dict[str, Path], tmp_path: Path) -> None:
    r = cli("convert", files["pt"], tmp_path / "p.safetensors", "--progress")
    assert r.returncode == 0, r.stderr
    assert "reading" in r.stderr and "writing" in r.stderr and "100%" in r.stderr
    r = cli("convert", files["pt"], tmp_path / "p.jnet", "--progress")
    assert "reading" in r.stderr and "saving" in r.stderr and "100%" in r.stderr
    r = cli("convert", files["pt"], tmp_path / "q.safetensors")  # stderr is a pipe: no bar
    assert r.returncode == 0 and r.stderr == ""


# --- errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "command, name, content, message",
    [
        ("inspect", "missing.jnet", None, "missing.jnet: no such file or directory"),
        ("diff", "garbage.jnet", b"not a model file" * 10, "garbage.jnet"),
        ("inspect", "garbage.pt", b"\x80\x02garbage", "garbage.pt: not a PyTorch state_dict file"),
        ("convert", "garbage.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}",
         "garbage.safetensors: not a valid safetensors file"),
    ],
)
def test_bad_paths_and_files_give_one_line_and_exit_2(
    tmp_path: Path, command: str, name: str, content: bytes | None, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    args = {"inspect": (path,), "diff": (path, path), "convert": (path, tmp_path / "out.safetensors")}[command]
    r = cli(command, *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"jaxnets {command}: error: "), r.stderr
    assert message in lines[0]
    assert not (tmp_path / "out.safetensors").exists()


def test_a_directory_that_is_not_a_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    r = cli("inspect", tmp_path)
    assert r.returncode == 2
    assert "not a checkpoint directory" in r.stderr and "Traceback" not in r.stderr


def test_console_script_runs_the_same_command(files: dict[str, Path]) -> None:
    script = Path(sys.executable).with_name("jaxnets")
    if not script.exists():
        pytest.skip("the jaxnets console script is not installed in this environment")
    r = subprocess.run([str(script), "inspect", str(files["st"])], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{files['st']}  (safetensors, ") and "new.weight" in r.stdout


def test_convert_keeps_prng_keys_in_jaxnets_files_and_refuses_them_elsewhere(tmp_path: Path) -> None:
    src = tmp_path / "withkey.jnet"
    jaxnets.save_state_dict(src, {"w": np.arange(3, dtype=np.float32), "rng": jax.random.key(7)})
    r = cli("convert", src, tmp_path / "k.safetensors")
    assert r.returncode == 2 and "'rng' is a typed PRNG key array" in r.stderr, r.stderr
    assert not (tmp_path / "k.safetensors").exists()
    r = cli("convert", src, tmp_path / "copy.jnet")
    assert r.returncode == 0, r.stderr
    with jaxnets.open(tmp_path / "copy.jnet") as f:
        assert f.infos()["rng"].dtype == "key<fry>"
        assert np.array_equal(jax.random.key_data(f["rng"]), jax.random.key_data(jax.random.key(7)))


# --- foreign formats: float8, what a format cannot hold, refused torch files -----------------------
@pytest.fixture(scope="module")
def float8_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("f8")
    sd = {
        "q.weight": torch.tensor([[0.5, -1.75], [448.0, 0.0]]).to(torch.float8_e4m3fn),
        "q.scale": torch.tensor([1.0, 0.25]).to(torch.float8_e8m0fnu),
        "k.weight": torch.tensor([1.0, -57344.0]).to(torch.float8_e5m2),
    }
    safetensors_torch.save_file(sd, d / "f8.safetensors")
    return d / "f8.safetensors"


def test_inspect_and_diff_read_float8_safetensors(float8_file: Path) -> None:
    r = cli("inspect", float8_file)
    assert r.returncode == 0, r.stderr
    assert "q.weight  (2, 2)  float8_e4m3fn" in r.stdout and "float8_e8m0fnu" in r.stdout and "float8_e5m2" in r.stdout
    r = cli("diff", float8_file, float8_file)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.rstrip().endswith("identical")


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".jnet"])
def test_convert_float8_to_every_format_reads_back_bit_for_bit(float8_file: Path, tmp_path: Path, suffix: str) -> None:
    dst = tmp_path / f"out{suffix}"
    r = cli("convert", float8_file, dst)
    assert r.returncode == 0, r.stderr
    want = safetensors_torch.load_file(float8_file)
    if suffix == ".safetensors":
        got = {k: v.view(torch.uint8).numpy() for k, v in safetensors_torch.load_file(dst).items()}
    elif suffix == ".pt":
        got = {k: v.view(torch.uint8).numpy() for k, v in torch.load(dst, weights_only=True).items()}
    else:
        with jaxnets.open(dst) as f:
            got = {k: f[k].view(np.uint8) for k in f}
    assert set(got) == set(want)
    for k, t in want.items():
        np.testing.assert_array_equal(got[k], t.view(torch.uint8).numpy(), err_msg=k)
    r = cli("diff", float8_file, dst)
    assert r.returncode == 0 and "identical" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize(
    "value, dtype",
    [(np.zeros(4, "int4"), "int4"), (np.zeros(2, np.complex128), "complex128")],
)
def test_convert_what_safetensors_cannot_hold_is_one_line_naming_key_and_dtype(tmp_path: Path, value, dtype: str) -> None:
    import jax.numpy as jnp

    src = tmp_path / "in.jnet"
    arr = np.asarray(value, dtype=jnp.dtype(dtype)) if dtype == "int4" else value
    jaxnets.save_state_dict(src, {"ok": np.ones(2, np.float32), "odd.weight": arr})
    r = cli("convert", src, tmp_path / "out.safetensors")
    assert r.returncode == 2, r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr and "SafetensorError" not in r.stderr
    assert f"safetensors cannot hold 'odd.weight' ({dtype})" in lines[0]
    assert not (tmp_path / "out.safetensors").exists()


def test_convert_int4_to_torch_is_refused_by_key(tmp_path: Path) -> None:
    import jax.numpy as jnp

    src = tmp_path / "in.jnet"
    jaxnets.save_state_dict(src, {"odd": np.zeros(4, jnp.dtype("int4"))})
    r = cli("convert", src, tmp_path / "out.pt")
    assert r.returncode == 2 and "PyTorch has no dtype for 'odd' (int4)" in r.stderr, r.stderr
    assert not (tmp_path / "out.pt").exists()


@pytest.mark.parametrize("command", ["inspect", "diff", "convert"])
def test_refused_torch_files_are_one_line_in_every_command(tmp_path: Path, command: str) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save({"w": torch.eye(3).to_sparse()}, tmp_path / "sparse.pt")
    torch.save({"w": torch.zeros(2), "opt": _Pickled()}, tmp_path / "obj.pth")
    for name, message in (("sparse.pt", "'w' is a sparse tensor (torch.sparse_coo)"),
                          ("obj.pth", "loading it needs code execution, which jaxnets never does")):
        path = tmp_path / name
        args = {"inspect": (path,), "diff": (path, path), "convert": (path, tmp_path / "o.safetensors")}[command]
        r = cli(command, *args)
        assert r.returncode == 2, r.stdout
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], r.stderr
        assert "weights_only" not in r.stderr and "Warning" not in r.stderr


class _Pickled:  # any Python object: torch's weights-only loader refuses to rebuild it
    pass


def test_inspect_a_sharded_hugging_face_folder(tmp_path: Path) -> None:
    hub = pytest.importorskip("huggingface_hub")
    tm = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Linear(32, 32), torch.nn.Linear(32, 4))
    hub.save_torch_state_dict(tm.state_dict(), tmp_path, max_shard_size=3000)
    r = cli("inspect", tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith(f"{tmp_path}  (safetensors, 2 shards, ")
    assert "1.weight  (32, 32)  float32" in r.stdout
