"""Under `make test-min` (JAXNETS_FLOOR names its constraints file) the venv really is the floor."""

from __future__ import annotations

import os
import sys
from importlib import metadata
from pathlib import Path

import pytest
from _tools import ROOT, min_constraints

FLOOR = os.environ.get("JAXNETS_FLOOR")
pytestmark = pytest.mark.skipif(not FLOOR, reason="only under `make test-min` (JAXNETS_FLOOR unset)")


def test_every_pinned_package_is_installed_at_its_declared_lower_bound():
    pins = [line.split("==") for line in Path(str(FLOOR)).read_text().split()]
    assert pins, "empty constraints file"
    got = {name: metadata.version(name) for name, _ in pins}
    assert got == {name: version for name, version in pins}


def test_the_interpreter_is_the_floor_python():
    import tomllib

    floor = min_constraints.floor_python(tomllib.loads((ROOT / "pyproject.toml").read_text()))
    assert f"{sys.version_info.major}.{sys.version_info.minor}" == floor
