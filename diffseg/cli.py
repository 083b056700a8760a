"""The `diffseg` command line: `diffseg data|train|eval|refine ...` (also `python -m diffseg`).

Each command group lives next to the code it drives and registers itself here with ``add_parser(subparsers)``;
its handler is stored as ``func`` on the parsed namespace. Errors that are the user's (bad paths, bad config keys,
bad data) are printed as one clear line and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Command groups, in the order `--help` lists them: (module with add_parser(subparsers)).
_GROUPS = ("diffseg.data.cli", "diffseg.commands")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffseg",
        description="DDPS companion: train and evaluate a diffusion mask-prior refiner on frozen segmentors.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _GROUPS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue  # a group not written yet
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # overrides may stand between options (`train --out r unet.width=32 --profile cpu train.ema=false`):
        # argparse gives the first block to `overrides` and leaves later ones over; they are overrides too
        if hasattr(args, "overrides") and all("=" in x and not x.startswith("-") for x in extra):
            args.overrides = [*(args.overrides or []), *extra]
        else:
            parser.parse_args(argv)  # argparse's own one-line error for what is truly unknown (exits 2)
    from diffseg.engines.common import NanLossError  # here: `diffseg --help` needs no torch
    from diffseg.study.failures import SweepFailed

    try:
        result = args.func(args)
    # What a user can cause (a missing or unreadable path, a bad value, a diverging run) is one line and exit 2;
    # anything else is a bug and keeps its traceback.
    except (FileNotFoundError, PermissionError, NotADirectoryError, ValueError, KeyError, NanLossError) as e:
        print(f"diffseg {args.command}: error: {e}", file=sys.stderr)
        return 2
    except SweepFailed as e:  # the other jobs ran; each failure on its own line, then exit 1
        print(f"diffseg {args.command}: {len(e.failures)} job(s) failed:", file=sys.stderr)
        for f in e.failures:
            print(f"  {f.line()}", file=sys.stderr)
        return 1
    return int(result or 0)
