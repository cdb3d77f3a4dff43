"""Pins every dependency of pyproject.toml at its declared lower bound, for `make test-min`.

    python3 tools/min_constraints.py [--extras flax,equinox]   # a pip constraints file on stdout
    python3 tools/min_constraints.py --python                  # the floor Python: "3.11"

Each runtime dependency (and each one of the named extras) must declare a lower bound (``>=X``,
``==X`` or ``~=X``); it becomes ``name==X``. A dependency without one is an error: a floor that
is not declared cannot be tested. Test tools (pytest...) are not pinned: their floors are not
part of what jaxnets promises.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*([^;]*?)\s*(;.*)?$")
_LOWER = re.compile(r"^(>=|==|~=)\s*([0-9][^,\s]*)$")


def lower_bound(requirement: str) -> tuple[str, str]:
    """``"jax>=0.7.1"`` -> ``("jax", "0.7.1")``.

    Raises:
      ValueError: the requirement has no lower bound, or two.
    """
    m = _REQ.match(requirement)
    if not m:
        raise ValueError(f"cannot parse the requirement {requirement!r}")
    name, spec = m.group(1), m.group(3)
    bounds = [b.group(2) for part in spec.split(",") if (b := _LOWER.match(part.strip()))]
    if len(bounds) != 1:
        raise ValueError(
            f"{requirement!r} must declare exactly one lower bound (>=X, ==X or ~=X) "
            f"to be tested at its floor; found {len(bounds)}."
        )
    return name, bounds[0]


def constraints(pyproject: dict, extras: Iterable[str] = ()) -> list[str]:
    """``["jax==0.7.1", ...]``: the runtime dependencies and the named extras at their floors.

    Raises:
      ValueError: an extra is not declared, or a requirement has no single lower bound.
    """
    project = pyproject["project"]
    reqs = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise ValueError(f"no extra {extra!r} in pyproject.toml; declared: {sorted(optional)}")
        reqs += optional[extra]
    pins: dict[str, str] = {}
    for req in reqs:
        name, version = lower_bound(req)
        key = re.sub(r"[-_.]+", "-", name).lower()
        if pins.setdefault(key, version) != version:
            raise ValueError(f"{name} is declared with two lower bounds: {pins[key]} and {version}")
    return [f"{name}=={version}" for name, version in pins.items()]


def floor_python(pyproject: dict) -> str:
    """``">=3.11"`` -> ``"3.11"``.

    Raises:
      ValueError: requires-python has no lower bound.
    """
    spec = pyproject["project"].get("requires-python", "")
    m = re.search(r">=\s*(\d+\.\d+)", spec)
    if not m:
        raise ValueError(f"requires-python {spec!r} declares no lower bound (>=X.Y)")
    return m.group(1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    ap.add_argument("--extras", default="", help="comma-separated extras to pin too")
    ap.add_argument("--python", action="store_true", help="print the floor Python (X.Y) instead")
    args = ap.parse_args(argv)
    pyproject = tomllib.loads(args.pyproject.read_text())
    try:
        if args.python:
            print(floor_python(pyproject))
        else:
            extras = [e for e in args.extras.split(",") if e]
            print("\n".join(constraints(pyproject, extras)))
    except ValueError as e:
        print(f"min_constraints: {args.pyproject}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
