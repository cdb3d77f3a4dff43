"""The ``jaxnets`` command: look into model files and checkpoints without writing code.

Usage::

    jaxnets inspect PATH          # keys, shapes, dtypes, sizes, architecture, metadata, steps
    jaxnets diff A B              # added / removed / changed keys, max |A - B| per tensor
    jaxnets convert SRC DST       # jaxnets file <-> .safetensors <-> .pt/.pth state_dict

``python -m jaxnets ...`` is the same command. Bad paths and bad files give one line on stderr
and exit status 2; ``diff`` exits 1 when the two differ (as ``diff(1)`` does), 0 when they match.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

__all__ = ["main"]

EXIT_ERROR = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxnets",
        description="Inspect, compare and convert jaxnets model files and checkpoints.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("inspect", help="show what a model file or checkpoint holds (headers only)")
    p.add_argument("path", help="a model file (.jnet), .safetensors, .pt/.pth/.bin, a Hugging Face model folder, or a checkpoint directory")
    p.add_argument("--step", type=int, default=None, help="checkpoint step to show in detail (default: latest)")
    p.add_argument("--max-keys", type=int, default=200, help="list at most this many keys (default 200; 0: all)")

    p = sub.add_parser("diff", help="compare the tensors of two files")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--atol", type=float, default=0.0, help="report tensors whose max |a - b| exceeds this (default 0)")

    p = sub.add_parser("convert", help="convert between jaxnets, safetensors and PyTorch files")
    p.add_argument("src")
    p.add_argument("dst", help="output path; its suffix picks the format (.safetensors, .pt/.pth, else jaxnets)")
    p.add_argument("--force", action="store_true", help="overwrite DST if it exists")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress bar in bytes (default: for 1 GiB or more, on a terminal)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line ``argv`` (default ``sys.argv[1:]``) and returns the exit status."""
    args = _parser().parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the CLI reads files; it never needs a GPU
    from jaxnets.errors import JaxnetsError

    try:
        if args.command == "inspect":
            from jaxnets.cli.inspect import inspect_path

            return inspect_path(args.path, step=args.step, max_keys=args.max_keys)
        if args.command == "diff":
            from jaxnets.cli.diff import diff_paths

            return diff_paths(args.a, args.b, atol=args.atol)
        from jaxnets.cli.convert import convert

        return convert(args.src, args.dst, force=args.force, progress=args.progress)
    except BrokenPipeError:  # e.g. `jaxnets inspect big.jnet | head`
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (silences the flush at exit)
        return 0
    except (JaxnetsError, OSError) as e:
        print(f"jaxnets {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror and e.filename:
        return f"{e.filename}: {e.strerror}"
    text = str(e).strip() or type(e).__name__
    lines = text.splitlines()
    return lines[0] if len(lines) == 1 else lines[0] + " " + " | ".join(s.strip() for s in lines[1:6])

