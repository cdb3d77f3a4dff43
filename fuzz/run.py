"""Coverage-guided fuzzing of jaxnets' load paths with atheris (``make fuzz``).

Usage::

    python fuzz/run.py --all --seconds 600        # every target, 10 minutes each
    python fuzz/run.py reader --seconds 60        # one target

Each target runs in its own process on a seed corpus of valid files written here (under
``fuzz/corpus/<target>/``, not committed), for a set time. Inputs that fail the target's oracle
(see ``fuzz/targets.py``) are written to ``fuzz/findings/<target>/``: copy each one to
``tests/fuzz_regressions/<target>/`` (``make test`` replays them) and fix the cause.
Exit status: 0 when no target found anything.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from targets import TARGETS, Workdir, seeds  # noqa: E402


def _fuzz_one(target: str, seconds: int) -> None:
    """In this process: instrument jaxnets, write seeds, run libFuzzer for ``seconds``."""
    import atheris

    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    with atheris.instrument_imports(include=["jaxnets"]):
        import jaxnets  # noqa: F401
        import jaxnets.cli  # noqa: F401

    work = Workdir()
    corpus = HERE / "corpus" / target
    corpus.mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(seeds(target, work)):
        (corpus / f"seed-{i}").write_bytes(data)
    findings = HERE / "findings" / target
    findings.mkdir(parents=True, exist_ok=True)
    fn = TARGETS[target]

    def one_input(data: bytes) -> None:
        fn(data, work)

    argv = [
        sys.argv[0],
        str(corpus),
        f"-max_total_time={seconds}",
        f"-artifact_prefix={findings}/",
        "-rss_limit_mb=8192",
        "-timeout=60",
        "-print_final_stats=1",
    ]
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("targets", nargs="*", help=f"targets to run: {', '.join(TARGETS)}")
    parser.add_argument("--all", action="store_true", help="run every target, one after the other")
    parser.add_argument(
        "--seconds", type=int, default=600, help="fuzzing time per target (default 600)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _fuzz_one(args.child, args.seconds)
        return 0
    names = list(TARGETS) if args.all else args.targets
    if not names or set(names) - set(TARGETS):
        parser.error(f"name targets among {', '.join(TARGETS)}, or pass --all")
    failed = []
    for name in names:
        start = time.monotonic()
        print(f"== fuzzing {name} for {args.seconds} s", flush=True)
        # libFuzzer ends the process when it stops; one process per target. The timeout is a
        # backstop (the fuzzer's own -max_total_time ends it), so a hang cannot block `make fuzz`.
        try:
            r = subprocess.run([sys.executable, __file__, "--child", name, "--seconds", str(args.seconds)],
                               timeout=args.seconds + 300)  # fmt: skip
            code = r.returncode
        except subprocess.TimeoutExpired:
            code = -1
        found = (
            sorted((HERE / "findings" / name).glob("*"))
            if (HERE / "findings" / name).exists()
            else []
        )
        print(
            f"== {name}: exit {code}, {len(found)} finding(s), {time.monotonic() - start:.0f} s",
            flush=True,
        )
        if code != 0 or found:
            failed.append(name)
    print("no findings" if not failed else f"findings in: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
