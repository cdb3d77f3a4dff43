"""tools/min_constraints.py: pyproject's lower bounds as the pins `make test-min` installs."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest
from _tools import ROOT, min_constraints

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _project(deps: list[str], **extras: list[str]) -> dict:
    return {"project": {"dependencies": deps, "optional-dependencies": extras}}


@pytest.mark.parametrize(
    ("requirement", "expected"),
    [
        ("jax>=0.7.1", ("jax", "0.7.1")),
        ("orbax-checkpoint >= 0.12.5", ("orbax-checkpoint", "0.12.5")),
        ("torch==2.13.0", ("torch", "2.13.0")),
        ("etils[epath]>=1.5,<2", ("etils", "1.5")),
        ("numpy~=1.26.4; python_version < '3.13'", ("numpy", "1.26.4")),
    ],
)
def test_a_requirement_is_pinned_at_its_lower_bound(requirement, expected):
    assert min_constraints.lower_bound(requirement) == expected


@pytest.mark.parametrize("requirement", ["numpy", "numpy<3", "numpy>1.2", "numpy>=1,>=2"])
def test_a_requirement_without_one_lower_bound_is_refused(requirement):
    with pytest.raises(ValueError, match="must declare exactly one lower bound"):
        min_constraints.lower_bound(requirement)


def test_every_runtime_dependency_of_pyproject_is_pinned():
    pins = min_constraints.constraints(PYPROJECT)
    names = [p.split("==")[0] for p in pins]
    assert len(pins) == len(PYPROJECT["project"]["dependencies"])
    assert {"jax", "numpy", "optax", "orbax-checkpoint", "msgpack", "xxhash"} <= set(names)
    assert "flax" not in names  # an extra, not a dependency: jaxnets imports it only in interop


def test_extras_are_pinned_on_request_and_unknown_ones_refused():
    project = _project(["jax>=0.7.1"], flax=["flax>=0.12.0"])
    assert min_constraints.constraints(project, ["flax"]) == ["jax==0.7.1", "flax==0.12.0"]
    with pytest.raises(ValueError, match=r"no extra 'torch' in pyproject.toml; declared: \['flax'\]"):
        min_constraints.constraints(project, ["torch"])


def test_one_package_with_two_floors_is_refused():
    project = _project(["flax>=0.12.0"], test=["flax>=0.12.8"])
    with pytest.raises(ValueError, match="flax is declared with two lower bounds: 0.12.0 and 0.12.8"):
        min_constraints.constraints(project, ["test"])


def test_the_floor_python_comes_from_requires_python():
    assert min_constraints.floor_python({"project": {"requires-python": ">=3.11"}}) == "3.11"
    with pytest.raises(ValueError, match="declares no lower bound"):
        min_constraints.floor_python({"project": {"requires-python": "<4"}})


def test_the_script_prints_a_constraints_file_and_exits_2_on_a_bad_pyproject(tmp_path):
    script = str(ROOT / "tools" / "min_constraints.py")
    out = subprocess.run([sys.executable, script, "--extras", "flax,equinox"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert "jax==" in out and "flax==" in out and "equinox==" in out
    bad = tmp_path / "pyproject.toml"
    bad.write_text('[project]\ndependencies = ["numpy"]\n')
    r = subprocess.run([sys.executable, script, "--pyproject", str(bad)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "'numpy' must declare exactly one lower bound" in r.stderr
