"""The `train`, `eval`, `refine`, `sweep`, `report` and `verify` commands (registered in diffseg/cli.py)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from diffseg.profiles import PROFILES

HELP_FMT = argparse.ArgumentDefaultsHelpFormatter


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a base segmentor (when needed) and a refiner, then evaluate",
        formatter_class=HELP_FMT,
        description="Train and evaluate one run. Run again with the same arguments to resume.",
    )
    p.add_argument("overrides", nargs="*", help="config overrides key.sub=value (e.g. unet.width=128)")
    p.add_argument(
        "--config", default=None, help="YAML config file (default: the profile's, or the release's)"
    )
    p.add_argument(
        "--profile",
        default=None,
        choices=PROFILES,
        help="start from a profile's config instead of --config",
    )
    p.add_argument(
        "--dataset", default="ade20k", choices=("ade20k", "cityscapes"), help="dataset of --profile"
    )
    p.add_argument(
        "--segmentor", default=None, help="base segmentor of --profile (default: the profile's first)"
    )
    p.add_argument("--out", required=True, help="run folder (created; an existing one is resumed)")
    p.add_argument(
        "--nproc",
        type=int,
        default=None,
        help="spawn N processes on this node (gloo on CPU, nccl on GPU); use torchrun for clusters",
    )
    p.add_argument(
        "--allow-config-change",
        action="store_true",
        help="continue a run folder whose config differs from the given one",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a run's base segmentor and refiner", formatter_class=HELP_FMT)
    p.add_argument("--run", required=True, help="run folder written by `diffseg train`")
    p.add_argument("--split", default="val", choices=("train", "val"), help="split to evaluate")
    p.add_argument(
        "--steps", type=int, default=None, help="network evaluations (default: the run's eval.num_evals)"
    )
    p.add_argument(
        "--sampler",
        default=None,
        help="inference scheme: strict | strict_release | free_renoise | single_step (default: the run's; checked "
        "against the sampler registry with the config)",
    )
    p.add_argument("--ms", action="store_true", help="multi-scale + flip test (final step only)")
    p.add_argument("--mode", default=None, choices=("whole", "slide"), help="whole-image or sliding-window")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "refine", help="refine a segmentor's masks for an image or a folder", formatter_class=HELP_FMT
    )
    p.add_argument(
        "--refiner", required=True, help="run folder (or its checkpoints/ file) of a trained refiner"
    )
    p.add_argument("--segmentor", default=None, help="base segmentor name (must match the run's)")
    p.add_argument("--weights", default=None, help="base segmentor weights (default: the run's)")
    p.add_argument("--input", required=True, help="an image file or a folder of images (.jpg/.png)")
    p.add_argument("--out", required=True, help="output folder: <stem>.png label maps and <stem>_overlay.png")
    p.add_argument("--steps", type=int, default=None, help="network evaluations (default: the run's)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.set_defaults(func=cmd_refine)
    add_study_parsers(sub)
    add_release_parser(sub)


def add_release_parser(sub: argparse._SubParsersAction) -> None:
    from diffseg.release_checkpoint import RELEASE_MODELS  # no torch: a dict of plain settings

    p = sub.add_parser(
        "convert-release",
        help="turn an authors' released DDPS checkpoint into a run folder for `diffseg eval --run`",
        formatter_class=HELP_FMT,
        description="Convert a DDPS release checkpoint (mmseg format: frozen base + refiner head) into a diffseg "
        "run folder (config.yaml, base.safetensors, checkpoints/); every key is mapped and checked first.",
    )
    p.add_argument("checkpoint", help="the release's .pth file, e.g. best_mIoU_iter_144000.pth")
    p.add_argument(
        "--config",
        required=True,
        choices=tuple(RELEASE_MODELS),
        help="which released model (its T and test settings); a file of another T is refused",
    )
    p.add_argument(
        "--base-classifier",
        required=True,
        help="the mmseg zoo checkpoint the release froze (its decode_head.conv_seg gives the base rows), e.g. "
        "segformer_mit-b2_512x512_160k_ade20k_20220620_114047-64e4feca.pth",
    )
    p.add_argument(
        "--data-root", default="data/ade20k", help="ADEChallengeData2016 folder the run evaluates on"
    )
    p.add_argument("--out", required=True, help="new run folder (an existing run is never overwritten)")
    p.set_defaults(func=cmd_convert_release)


def cmd_convert_release(args: argparse.Namespace) -> int:
    from diffseg.release_checkpoint import convert_release_checkpoint

    out = convert_release_checkpoint(
        args.checkpoint, args.config, args.out, args.base_classifier, data_root=args.data_root
    )
    print(f"wrote run folder {out}; evaluate it with: python -m diffseg eval --run {out}")
    return 0


def add_study_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="run every experiment of the study that the results store lacks",
        formatter_class=HELP_FMT,
        description="Trains and evaluates what results/<profile>/ lacks; resumable and incremental.",
    )
    p.add_argument("--profile", default="cpu", choices=PROFILES, help="study size")
    p.add_argument("--results", default="results", help="results store root")
    p.add_argument("--experiments", nargs="*", default=None, help="experiment names (default: all)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="parallel processes (default: one single-threaded process per CPU core; on CUDA one per visible GPU, "
        "each pinned to its own)",
    )
    p.add_argument(
        "--gpus-per-job",
        type=int,
        default=1,
        metavar="N",
        help="run each training as one DDP job over N GPUs (NCCL; on a CPU-only machine N single-threaded gloo "
        "processes); jobs are packed onto the visible GPUs, evaluations keep one GPU each. data.batch_size is "
        "the global batch, so the training is the same one",
    )
    p.add_argument("--data-only", action="store_true", help="only write the synthetic datasets")
    from diffseg.study.slurm import add_arguments

    add_arguments(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser(
        "report",
        help="write reports/index.html (findings at a glance), or render one executed notebook to HTML",
        formatter_class=HELP_FMT,
    )
    p.add_argument("--profile", default="cpu", choices=PROFILES, help="study size")
    p.add_argument("--results", default="results", help="results store root")
    p.add_argument(
        "--reports",
        default=None,
        help="folder of the rendered HTML reports (default: reports for cpu, reports-<profile> otherwise)",
    )
    p.add_argument(
        "--notebook",
        default=None,
        help="an executed notebook: render it to {reports}/<name>.html (byte-stable) instead of the index; an "
        "ablation (papermill parameters levels / overrides) to {reports}/ablations/<name>-<id>.html",
    )
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "verify",
        help="re-train a sample of the store's trainings to their first learning-curve point and compare",
        formatter_class=HELP_FMT,
        description="Does this machine give the committed numbers? Re-trains (in a temporary folder) every base "
        "segmentor and one refiner per dataset x segmentor and per finding up to its first recorded curve point, "
        "and compares every value there with the store's. Exit status 0 when all match. Writes nothing under the "
        "results store or runs/.",
    )
    p.add_argument("--profile", default="cpu", choices=PROFILES, help="study size")
    p.add_argument("--results", default="results", help="results store root")
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--sample", type=int, default=None, help="re-make the first N trainings of the sample order"
    )
    group.add_argument("--all", action="store_true", help="re-make every training of the store")
    p.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="allowed difference (mIoU as a fraction); default 0 on CPU, on GPU 0.01 unless the rows were made "
        "with deterministic algorithms",
    )
    p.add_argument("--device", default=None, help="cpu | cuda (default: the device the rows record)")
    p.add_argument(
        "--cpu-kernels",
        default=None,
        choices=("avx2", "avx512", "native"),
        help="CPU kernels the workers may use (default: the recorded machine's level, else avx2)",
    )
    p.add_argument("--workers", type=int, default=None, help="processes (default: one per core; 1 on CUDA)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker (the sweep's: 1)")
    p.set_defaults(func=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    from diffseg.study.verify_run import verify

    return verify(
        args.profile,
        args.results,
        sample=args.sample,
        everything=args.all,
        tolerance=args.tolerance,
        device=args.device,
        cpu_kernels=args.cpu_kernels,
        workers=args.workers,
        threads=args.threads,
    )


def cmd_sweep(args: argparse.Namespace) -> int:
    from diffseg import experiments as ex
    from diffseg.data import ensure_synthetic
    from diffseg.results import ResultsStore

    if args.profile != "paper":
        for ds in ex.DATASETS:
            cfg = ex.data_config(ds, args.profile)
            ensure_synthetic(cfg)
            print(f"{ds}: synthetic data at {cfg.root}")
    else:
        from diffseg.data import check_dataset

        for ds in ex.DATASETS:
            root = ex.data_config(ds, "paper").root
            check_dataset(ds, root)
    if args.data_only:
        return 0
    if args.status:
        from diffseg.study.slurm_sweep import status

        names = args.experiments or list(ex.EXPERIMENTS)
        print(
            status([(n, a) for n in names for a in ex.arms_of(n, args.profile)], args.profile, args.results)
        )
        return 0
    t0 = time.time()
    from diffseg.study.slurm import options_from_args

    df = ex.sweep(
        args.profile,
        args.results,
        experiments=args.experiments,
        workers=args.workers,
        device=args.device,
        executor=args.executor,
        slurm=options_from_args(args) if args.executor == "slurm" else None,
        wait=not args.no_wait,
        gpus_per_job=args.gpus_per_job,
    )
    if args.no_wait:
        return 0
    store = ResultsStore(Path(args.results) / args.profile)
    print(
        f"sweep done in {time.time() - t0:.0f} s; {len(df)} rows in {store.root / 'results.parquet'} "
        "(and results.csv)"
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from diffseg.notebook import default_reports, rendered_page
    from diffseg.report import write_index

    if args.notebook:
        from diffseg.render import render_html

        page, title = rendered_page(args.notebook, args.reports, args.profile)
        path = render_html(args.notebook, page, title=title)
    else:
        path = write_index(args.profile, args.results, args.reports or default_reports(args.profile))
    print(f"wrote {path}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from diffseg.config import apply_overrides, load_config
    from diffseg.engines import run
    from diffseg.profiles import profile_config

    if args.profile and args.config:
        raise ValueError("give either --profile or --config, not both")
    if args.profile:
        cfg = apply_overrides(profile_config(args.profile, args.dataset, args.segmentor), args.overrides)
    else:
        cfg = load_config(args.config, args.overrides)
    out = Path(args.out)
    if (out / "metrics.json").exists():
        print(f"{out} is complete (metrics.json present); nothing to do.")
    res = run(
        cfg,
        out,
        nproc_per_node=args.nproc,
        progress=not args.no_progress,
        allow_config_change=args.allow_config_change,
    )
    if res:
        print(format_results(res))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from diffseg.config import EvalConfig, replace
    from diffseg.data import build_dataset, collate
    from diffseg.engines import evaluate_models, load_refiner_from_run, resolve_device

    run_dir = Path(args.run)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    if args.sampler is not None or args.mode is not None:  # a typo fails before the run is loaded
        EvalConfig(**{k: v for k, v in (("sampler", args.sampler), ("mode", args.mode)) if v is not None})
    cfg, refiner, segmentor = load_refiner_from_run(run_dir, resolve_device("auto"))
    ev = cfg.eval
    changes: dict[str, Any] = {}
    if args.steps is not None:
        changes["num_evals"] = args.steps
    if args.sampler is not None:
        changes["sampler"] = args.sampler
    if args.mode is not None:
        changes["mode"] = args.mode
    cfg = replace(cfg, eval=replace(ev, multi_scale=args.ms, **changes))
    ds = build_dataset(cfg.data, args.split, train=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=cfg.eval.batch_size, collate_fn=collate)
    device = next(refiner.parameters()).device
    res = evaluate_models(refiner, segmentor, cfg, loader, ds, device)
    name = f"eval_{args.split}_{cfg.eval.sampler}_{cfg.eval.num_evals}{'_ms' if args.ms else ''}.json"
    (run_dir / name).write_text(json.dumps(res, indent=1))
    print(format_results(res))
    print(f"written to {run_dir / name}")
    return 0


def cmd_refine(args: argparse.Namespace) -> int:
    from diffseg.inference import refine_folder

    report = refine_folder(
        args.refiner,
        args.input,
        args.out,
        segmentor=args.segmentor,
        weights=args.weights,
        steps=args.steps,
        device=args.device,
    )
    print(f"wrote {len(report.written)} refined label maps and overlays to {args.out}")
    if report.skipped:
        print(
            f"skipped {len(report.skipped)} unreadable image(s) (listed above); exit status 1",
            file=sys.stderr,
        )
        return 1
    return 0


def format_results(res: dict[str, Any]) -> str:
    """A small text table: base and refiner (per step) mIoU / mBIoU in percent."""
    if "base" not in res:
        return json.dumps(res)
    lines = [f"{'method':<18}{'t':>5}{'mIoU':>8}{'mBIoU':>8}{'mAcc':>8}{'aAcc':>8}"]

    def row(name: str, t: Any, m: dict[str, Any]) -> str:
        return (
            f"{name:<18}{t!s:>5}{100 * m['mIoU']:8.2f}{100 * m['mBIoU']:8.2f}{100 * m['mAcc']:8.2f}"
            f"{100 * m['aAcc']:8.2f}"
        )

    lines.append(row("base", "-", res["base"]))
    for i, (t, m) in enumerate(zip(res.get("t", []), res.get("refined", [])), start=1):
        lines.append(row(f"refined step {i}", t, m))
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `python -m diffseg`")
