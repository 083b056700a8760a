"""`diffseg data synth|check`: write a synthetic dataset, validate a dataset root."""

from __future__ import annotations

import argparse
import time

from diffseg.data.checks import check_dataset, format_summary
from diffseg.data.synthetic import DEFAULT_SIZE, LAYOUTS, write_synthetic


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``data`` command group on the top-level parser's subparsers."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    data = subparsers.add_parser(
        "data", help="write synthetic datasets, check dataset roots", formatter_class=fmt
    )
    sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    synth = sub.add_parser(
        "synth", help="write a synthetic dataset in a real on-disk layout", formatter_class=fmt
    )
    synth.add_argument(
        "--layout", choices=LAYOUTS, default="ade20k", help="on-disk layout and label encoding"
    )
    synth.add_argument("--root", required=True, help="folder to create (must not exist or be empty)")
    synth.add_argument("--n-train", type=int, default=200, help="number of training images")
    synth.add_argument("--n-val", type=int, default=50, help="number of validation images")
    synth.add_argument(
        "--size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        default=None,
        help=f"image size; default per layout: {', '.join(f'{k} {v[0]} {v[1]}' for k, v in DEFAULT_SIZE.items())}",
    )
    synth.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    synth.add_argument("--overwrite", action="store_true", help="replace an existing root")
    synth.set_defaults(func=_synth)

    check = sub.add_parser("check", help="validate a dataset root and print its summary", formatter_class=fmt)
    check.add_argument("--dataset", choices=LAYOUTS, default="ade20k", help="dataset layout to expect")
    check.add_argument("--root", required=True, help="dataset root folder")
    check.add_argument("--splits", nargs="+", default=["train", "val"], help="splits to check")
    check.set_defaults(func=_check)


def _synth(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    size = tuple(args.size) if args.size else DEFAULT_SIZE[args.layout]
    root = write_synthetic(args.layout, args.root, args.n_train, args.n_val, size, args.seed, args.overwrite)
    took = time.perf_counter() - start
    print(
        f"wrote synthetic {args.layout} to {root}: {args.n_train} train + {args.n_val} val images "
        f"of {size[0]}x{size[1]} (seed {args.seed}) in {took:.2f} s"
    )
    return 0


def _check(args: argparse.Namespace) -> int:
    print(format_summary(check_dataset(args.dataset, args.root, args.splits)))
    return 0
