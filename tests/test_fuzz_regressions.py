"""Replays every input that ever failed a fuzz target (tests/fuzz_regressions/<target>/*).

The oracle is the fuzz target's own (fuzz/targets.py): bad input raises a jaxnets error, and a
load that succeeds returns exactly what was saved. The seeds (valid files) must pass too.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REGRESSIONS = Path(__file__).resolve().parent / "fuzz_regressions"


def _targets():  # fuzz/ is not a package: load its module by path
    spec = importlib.util.spec_from_file_location(
        "jaxnets_fuzz_targets", ROOT / "fuzz" / "targets.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


targets = _targets()
CASES = sorted(
    p for p in REGRESSIONS.glob("*/*") if p.is_file() and p.parent.name in targets.TARGETS
)


@pytest.mark.parametrize("path", CASES, ids=[f"{p.parent.name}/{p.name}" for p in CASES])
def test_a_past_finding_stays_fixed(path: Path) -> None:
    targets.replay(path.parent.name, path.read_bytes())


@pytest.mark.parametrize("target", sorted(targets.TARGETS))
def test_the_seed_corpus_passes_its_target(target: str) -> None:
    work = targets.Workdir()
    try:
        corpus = targets.seeds(target, work)
        assert corpus
        for data in corpus:
            targets.TARGETS[target](data, work)
    finally:
        work.close()


def test_every_regression_folder_names_a_target() -> None:
    folders = {p.name for p in REGRESSIONS.iterdir() if p.is_dir()}
    assert folders <= set(targets.TARGETS), folders - set(targets.TARGETS)
