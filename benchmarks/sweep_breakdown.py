"""Where the study's time goes: per experiment, per kind of training and evaluation, and inside one refiner step.

    .venv/bin/python benchmarks/sweep_breakdown.py [--profile cpu] [--results results] [--steps 30] [--malloc] [--unet]

Part 1 reads what a finished sweep left behind, so it costs nothing to run: the sweep's job table
(``results/<profile>/jobs.csv``: seconds and peak memory of every job), the run folders' ``log.csv`` (a
timestamp every ``train.log_every`` iterations: the seconds a training took and its iterations) and the results
rows (``eval_time_s`` per evaluation). Part 2 times the parts of one refiner training step of the profile
(data, frozen segmentor, the no-grad first prediction of noise-on-first-prediction arms, denoiser forward,
backward, optimiser) over ``--steps`` steps in this process, single-threaded as a sweep worker runs, with a
randomly initialised base (the cost does not depend on the weights). Each part is also given as a share of the
whole step, so the lever for a faster study can be read off the table. Part 3 times one learning-curve point
the way the previous code computed it and the way it is computed now, in the same process. Part 4
(``--malloc``) times the step with glibc's default heap trimming and with the sweep workers' malloc settings, each
in fresh subprocesses (glibc reads them at process start), with the minor page faults per step. Part 5
(``--unet``) times the whole step for UNet variants (ResNet blocks per level, attention head channels) in this
process, interleaved in rounds, as ratios to the profile's UNet.
"""

from __future__ import annotations

import argparse
import csv
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere


def _training_time(log: Path) -> tuple[float, int]:
    """(seconds this run trained, iterations it trained) from a log.csv: the time between its first and last
    logged iteration scaled to the iterations it ran (a stage 2 starts at the end of the stage 1 it was
    initialised from; those iterations were trained, and are counted, in the stage-1 run)."""
    rows = list(csv.DictReader(log.open()))
    its = [int(r["iteration"]) for r in rows]
    times = [float(r["time"]) for r in rows]
    # a resumed run appends a second pass that restarts below the last iteration: keep the last pass
    starts = [i for i in range(1, len(its)) if its[i] < its[i - 1]]
    first = starts[-1] if starts else 0
    its, times = its[first:], times[first:]
    if len(its) < 2 or its[-1] <= its[0]:
        return 0.0, its[-1] if its else 0
    per_it = (times[-1] - times[0]) / (its[-1] - its[0])
    trained = its[-1] - its[0] + min(its[0], its[1] - its[0])  # the first logged interval was trained too
    return per_it * trained, trained


def jobs_breakdown(results: Path, profile: str) -> None:
    """Per phase and per experiment: the sweep's own job table (``results/<profile>/jobs.csv``: seconds and peak
    memory of every job, written as each finished)."""
    import pandas as pd

    path = results / profile / "jobs.csv"
    if not path.is_file():
        print(f"no {path} (sweeps before the job table existed): per-job table skipped\n")
        return
    jobs = pd.read_csv(path)
    # a refiner or evaluation job's label starts with the experiment that first needed it ("noise_object...: ")
    jobs["experiment"] = jobs["job"].str.extract(r"(?:^| )([A-Za-z_][A-Za-z0-9_]*): ")[0].fillna("")
    print(f"## Part 1a: the {profile} sweep's job table ({path})\n")
    print("| phase | experiment | jobs | s in all (worker) | s / job (median) | peak memory GiB (max) |")
    print("|---|---|---|---|---|---|")
    for (phase, exp), g in jobs.groupby(["phase", "experiment"], sort=False):
        print(
            f"| {phase} | {exp or '-'} | {len(g)} | {g['seconds'].sum():.0f} | {g['seconds'].median():.1f} | "
            f"{g['peak_memory_gib'].max():.2f} |"
        )
    print(f"\n{len(jobs)} jobs, {jobs['seconds'].sum():.0f} s of worker time.\n")


def study_breakdown(results: Path, profile: str) -> None:
    import pandas as pd

    jobs_breakdown(results, profile)
    runs = results.resolve().parent / "runs" / profile
    if not runs.is_dir():
        print(f"no run folders under {runs}: run the sweep first (part 1 skipped)")
        return
    kinds: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for log in sorted(runs.glob("**/log.csv")):
        rel = log.relative_to(runs).parts
        kind = rel[0] if rel[0] in ("base", "stage1") else "refiner (stage 2 or one-stage)"
        kinds[kind].append(_training_time(log))
    print(f"## Part 1: where the {profile} sweep's time went ({runs})\n")
    print("| training | runs | iterations (median) | s / run (median) | s in all | ms / iteration |")
    print("|---|---|---|---|---|---|")
    total_train = 0.0
    for kind, vals in kinds.items():
        secs = sorted(s for s, _ in vals)
        its = sorted(i for _, i in vals)
        all_s = sum(secs)
        total_train += all_s
        per = 1000 * all_s / max(1, sum(its))
        print(
            f"| {kind} | {len(vals)} | {its[len(its) // 2]} | {secs[len(secs) // 2]:.1f} | {all_s:.0f} | {per:.0f} |"
        )
    df = pd.read_parquet(results / profile / "results.parquet")
    ev = df.drop_duplicates("run_id")
    print("\n| experiment | evaluations | trainings | eval s in all | eval s (median) |")
    print("|---|---|---|---|---|")
    total_eval = 0.0
    for name, g in ev.groupby("experiment"):
        total_eval += g["eval_time_s"].sum()
        print(
            f"| {name} | {len(g)} | {g['train_id'].nunique()} | {g['eval_time_s'].sum():.0f} | "
            f"{g['eval_time_s'].median():.1f} |"
        )
    print(
        f"\nTraining {total_train:.0f} s and evaluation {total_eval:.0f} s of worker time (two workers share the "
        "wall clock; the sweep's wall time is about half their sum).\n"
    )


def step_anatomy(profile: str, steps: int, noise_object: str, batch_size: int | None = None) -> None:
    from diffseg.config import replace
    from diffseg.engines import build_models, get_dataflow, iteration_seed, make_generator, scaled_lr
    from diffseg.engines.common import STREAM_REFINER
    from diffseg.profiles import profile_config

    torch.set_num_threads(1)  # as a sweep worker
    cfg = profile_config(profile, "ade20k")
    cfg = replace(cfg, refiner=replace(cfg.refiner, noise_object=noise_object))
    if batch_size:
        cfg = replace(cfg, data=replace(cfg.data, batch_size=batch_size))
    device = torch.device("cpu")
    loader, _, val_ds = get_dataflow(cfg, steps + 3)
    segmentor, refiner = build_models(cfg, device, None, val_ds.num_classes)
    opt = torch.optim.AdamW([p for p in refiner.denoiser.parameters() if p.requires_grad], lr=scaled_lr(cfg))
    parts: dict[str, float] = defaultdict(float)
    it = iter(loader)

    def timed(name: str, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        parts[name] += time.perf_counter() - t0
        return out

    def forward_and_loss(x_t, t, cond, mask):
        pred = refiner.denoise(x_t, t, cond)
        up = torch.nn.functional.interpolate(pred.float(), size=mask.shape[-2:], mode="bilinear")
        rows = up.permute(0, 2, 3, 1).reshape(-1, up.shape[1])
        return torch.nn.functional.cross_entropy(rows, mask.reshape(-1), ignore_index=255)

    first = f"noise object '{noise_object}'" + (
        " (a no-grad denoiser pass)" if noise_object == "first" else ""
    )
    faults0 = 0
    for i in range(steps + 3):
        if i == 3:  # warm-up done
            parts.clear()
            faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        batch = timed("data (decode, augment, collate)", next, it)
        gen = make_generator(iteration_seed(cfg.seed, i, STREAM_REFINER, 0), device)
        image, mask = batch["image"], batch["mask"]
        features, logits = timed("frozen segmentor forward (no grad)", refiner.base_outputs, image)
        cond = refiner.make_condition(features, logits)
        b, (h, w), T = image.shape[0], logits.shape[-2:], refiner.kernel.num_steps
        t = torch.randint(1, T + 1, (b,), generator=gen)
        x_T = refiner.kernel.prior_sample((b, h, w), generator=gen, device=device)
        obj = timed(first, refiner._noise_object, noise_object, mask, logits, x_T, cond)
        x_t = timed("forward noise q(x_t | x_0)", refiner.kernel.q_sample, obj, t, gen)
        refiner.denoiser.train()
        loss = timed("denoiser forward + loss", forward_and_loss, x_t, t, cond, mask)
        opt.zero_grad(set_to_none=True)
        timed("backward", loss.backward)
        timed("optimiser step (AdamW)", opt.step)
    whole = sum(parts.values())
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / steps
    print(
        f"## Part 2: one {profile} refiner step, ADE20K layout, {cfg.segmentor.name}, UNet width "
        f"{cfg.unet.width}, batch {cfg.data.batch_size}, crop {cfg.data.crop_size}, 1 thread, {steps} steps\n"
    )
    print("| part | ms / step | share |")
    print("|---|---|---|")
    for name, s in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {1000 * s / steps:.1f} | {s / whole:.0%} |")
    print(f"| **whole step** | **{1000 * whole / steps:.1f}** | 100% |\n")
    print(f"Minor page faults per step: {faults:.0f}.\n")


def _train_step(refiner, opt, batch, noise_object: str) -> None:
    """One refiner training step as the trainer runs it: DFP loss, backward, AdamW."""
    loss = refiner.loss(batch, noise_object=noise_object)["loss"]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def whole_step(profile: str, steps: int) -> None:
    """Part 4's measurement: ``steps`` training steps as the refiner trainer runs them (frozen segmentor, DFP loss,
    backward, AdamW), after 3 warm-up steps; prints ``STEP <ms per step> <minor page faults per step>``."""
    from diffseg.engines import build_models, get_dataflow, scaled_lr
    from diffseg.profiles import profile_config

    torch.set_num_threads(1)
    cfg = profile_config(profile, "ade20k")
    loader, _, val_ds = get_dataflow(cfg, steps + 3)
    _, refiner = build_models(cfg, torch.device("cpu"), None, val_ds.num_classes)
    opt = torch.optim.AdamW([p for p in refiner.denoiser.parameters() if p.requires_grad], lr=scaled_lr(cfg))
    batches = list(loader)  # decoded up front: the data's cost does not depend on the heap settings
    refiner.denoiser.train()
    for i, batch in enumerate(batches):
        if i == 3:
            t0, faults0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        _train_step(refiner, opt, batch, cfg.refiner.noise_object)
    ms = 1000 * (time.perf_counter() - t0) / steps
    print(f"STEP {ms:.2f} {(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / steps:.0f}")


def malloc_effect(profile: str, steps: int, repeats: int) -> None:
    """Part 4: the refiner step with glibc's default heap trimming and with the sweep workers' settings
    (``diffseg.study.workers.WORKER_MALLOC_ENV``). glibc reads them at process start, so each is timed in a fresh
    subprocess of this script (interleaved, ``repeats`` times each, median reported) rather than in this one."""
    import os
    import statistics
    import subprocess

    from diffseg.study.workers import WORKER_MALLOC_ENV

    clean = {k: v for k, v in os.environ.items() if k not in WORKER_MALLOC_ENV}
    runs: dict[str, list[tuple[float, float]]] = {"glibc defaults": [], "sweep workers": []}
    for _ in range(repeats):
        for name, env in (("glibc defaults", clean), ("sweep workers", {**clean, **WORKER_MALLOC_ENV})):
            cmd = [sys.executable, __file__, "--profile", profile, "--steps", str(steps), "--step-only"]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            ms, faults = next(line for line in out.splitlines() if line.startswith("STEP ")).split()[1:]
            runs[name].append((float(ms), float(faults)))
    print(f"## Part 4: heap trimming, one {profile} refiner step (median of {repeats} fresh processes)\n")
    print("| malloc settings | ms / step | minor page faults / step | speed-up |")
    print("|---|---|---|---|")
    base = statistics.median(ms for ms, _ in runs["glibc defaults"])
    for name, rs in runs.items():
        ms = statistics.median(m for m, _ in rs)
        print(f"| {name} | {ms:.1f} | {statistics.median(f for _, f in rs):.0f} | {base / ms:.2f}x |")
    print()


def _seconds_per_evaluation(models, cfg, loader, val_ds, steps: str, resize, repeats: int) -> float:
    """Mean seconds of one `evaluate_models` pass (after a warm-up pass) with the evaluation's resize = ``resize``."""
    from diffseg import prediction
    from diffseg.engines.evaluation import evaluate_models

    segmentor, refiner = models
    device = torch.device("cpu")
    kept = prediction.resize_bilinear
    prediction.resize_bilinear = resize
    try:
        evaluate_models(refiner, segmentor, cfg, loader, val_ds, device, steps=steps)
        t0 = time.perf_counter()
        for _ in range(repeats):
            evaluate_models(refiner, segmentor, cfg, loader, val_ds, device, steps=steps)
        return (time.perf_counter() - t0) / repeats
    finally:
        prediction.resize_bilinear = kept


def curve_point_cost(profile: str, repeats: int) -> None:
    """Part 3: one learning-curve point as the previous code computed it and as it is computed now.

    Before: every step of the sampler upsampled (to the padded size, then again to the mask's size even when the
    two are equal) and scored. Now: only the first and final steps are scored, and an equal-size resize is
    skipped (it is the identity). The last column is what also running the strict sampler at every point would
    add (the budget curve of finding 3). Same process, same weights, same images.
    """
    import torch.nn.functional as F

    from diffseg import curves, engines
    from diffseg.config import replace
    from diffseg.prediction import resize_bilinear
    from diffseg.profiles import profile_config

    def always(x, size):  # the previous resize: interpolate even at equal size
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    torch.set_num_threads(1)
    print(f"## Part 3: one learning-curve point ({curves.MAX_IMAGES} val images, {profile}, 1 thread)\n")
    print("| dataset | before: all steps, every resize (s) | now: first + final step (s) | ratio | "
          "+ strict sampler would add (s) |")  # fmt: skip
    print("|---|---|---|---|---|")
    for dataset in ("ade20k", "cityscapes"):
        cfg = profile_config(profile, dataset)
        _, _, val_ds = engines.get_dataflow(cfg, 1)
        models = engines.build_models(cfg, torch.device("cpu"), None, val_ds.num_classes)
        loader = curves.subset_loader(cfg, val_ds)
        ecfg = curves.eval_config(cfg, 2)
        strict = replace(ecfg, eval=replace(ecfg.eval, sampler="strict"))
        before = _seconds_per_evaluation(models, ecfg, loader, val_ds, "all", always, repeats)
        now = _seconds_per_evaluation(models, ecfg, loader, val_ds, "ends", resize_bilinear, repeats)
        extra = _seconds_per_evaluation(models, strict, loader, val_ds, "last", resize_bilinear, repeats)
        print(f"| {dataset} | {before:.2f} | {now:.2f} | {before / now:.2f}x | {extra:.2f} |")
    print()


# Part 5's UNet variants: (label, unet overrides) against the profile's UNet, timed in the same process.
UNET_VARIANTS = (
    ("2 blocks, 4 x 32 attention channels (the release's)", {"blocks": 2, "attention_head_channels": 32}),
    ("2 blocks, 4 x 8", {"blocks": 2, "attention_head_channels": 8}),
    ("1 block, 4 x 32", {"blocks": 1, "attention_head_channels": 32}),
    ("1 block, 4 x 8", {"blocks": 1, "attention_head_channels": 8}),
    ("2 blocks, no attention", {"blocks": 2, "attention": False}),
)


def unet_variants(profile: str, steps: int, rounds: int) -> None:
    """Part 5: the whole refiner training step (as ``whole_step``) for each of `UNET_VARIANTS`, in this process,
    interleaved over ``rounds`` rounds of ``steps`` steps on the same batches (a noisy machine slows every variant
    of a round alike); the median per variant and its ratio to the profile's own UNet."""
    from diffseg.config import replace
    from diffseg.engines import build_models, get_dataflow, scaled_lr
    from diffseg.profiles import profile_config

    torch.set_num_threads(1)
    cfg0 = profile_config(profile, "ade20k")
    variants = [("the profile's UNet", {})] + list(UNET_VARIANTS)
    loader, _, val_ds = get_dataflow(cfg0, steps + 1)
    batches = list(loader)
    runs = []
    for label, over in variants:
        cfg = replace(cfg0, unet=replace(cfg0.unet, **over))
        torch.manual_seed(0)
        _, refiner = build_models(cfg, torch.device("cpu"), None, val_ds.num_classes)
        params = [p for p in refiner.denoiser.parameters() if p.requires_grad]
        runs.append(
            (label, refiner, torch.optim.AdamW(params, lr=scaled_lr(cfg)), sum(p.numel() for p in params))
        )
    times: dict[str, list[float]] = defaultdict(list)
    for r in range(rounds + 1):  # round 0 warms up
        for label, refiner, opt, _ in runs:
            refiner.denoiser.train()
            t0 = time.perf_counter()
            for batch in batches[1:]:
                _train_step(refiner, opt, batch, cfg0.refiner.noise_object)
            if r:
                times[label].append(1000 * (time.perf_counter() - t0) / steps)
    base = sorted(times[variants[0][0]])[rounds // 2]
    print(
        f"## Part 5: the refiner step by UNet variant ({profile}, ADE20K layout, width {cfg0.unet.width}, batch "
        f"{cfg0.data.batch_size}, 1 thread; median of {rounds} interleaved rounds of {steps} steps)\n"
    )
    print("| UNet | trainable parameters | ms / step | vs the profile's |")
    print("|---|---|---|---|")
    for label, _, _, n in runs:
        ms = sorted(times[label])[rounds // 2]
        print(f"| {label} | {n / 1e6:.2f} M | {ms:.1f} | {base / ms:.2f}x faster |")
    print()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="cpu", choices=("smoke", "cpu", "paper-dry"))
    p.add_argument("--results", default="results", help="results store root of a finished sweep")
    p.add_argument("--steps", type=int, default=30, help="timed refiner steps in part 2 (after 3 warm-up)")
    p.add_argument("--noise-object", default="first", choices=("gt", "base", "first"))
    p.add_argument(
        "--batch", type=int, default=None, help="part 2 at this batch size (default: the profile's)"
    )
    p.add_argument("--skip-step", action="store_true", help="part 1 only")
    p.add_argument("--repeats", type=int, default=2, help="timed repeats of each evaluation in part 3")
    p.add_argument("--malloc", action="store_true", help="also part 4: glibc heap trimming on / off")
    p.add_argument("--unet", action="store_true", help="also part 5: the step by UNet variant")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds of part 5")
    p.add_argument("--step-only", action="store_true", help=argparse.SUPPRESS)  # part 4's subprocesses
    args = p.parse_args()
    if args.step_only:
        whole_step(args.profile, args.steps)
        return 0
    study_breakdown(Path(args.results), args.profile)
    if not args.skip_step:
        step_anatomy(args.profile, args.steps, args.noise_object, args.batch)
        curve_point_cost(args.profile, args.repeats)
    if args.malloc:
        malloc_effect(args.profile, args.steps, args.repeats)
    if args.unet:
        unet_variants(args.profile, args.steps, args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
