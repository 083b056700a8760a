# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Finding 3: the strict denoising scheme is not needed at inference
#
# Samplers x number of network evaluations: the strict posterior (D3PM's exact q(x_s | x_t, x0_hat) for any
# stride), the release's strict step (`strict_release`: a hard argmax x0, one-step kernels whatever the stride,
# levels off by one), free re-noising and a single step. The finding holds if free re-noising is at least as good
# as the strict samplers; "even better" if significantly so.

# %% tags=["parameters"]
profile = "cpu"
results_dir = "results"
reports_dir = None  # None: the profile's (reports/ for cpu, reports-<profile>/ otherwise)
device = "auto"
datasets = None  # None: the profile's datasets (ablations: ADE20K only under smoke / cpu)
segmentors = None  # None: the profile's base segmentors
seeds = None  # None: the profile's seeds
# overrides: config overrides applied to every arm, in the CLI's syntax, e.g. ["train.stage2_iterations=200"]
overrides = []
levels = {}  # {factor: [values]} to run instead of the defaults; factors here: sampler, num_evals
train = None  # None: train missing rows, except inside JupyterLab (there, set True to train)

# %%
from IPython.display import Markdown, display

from diffseg import notebook, viz

NAME = "inference_scheme"

# %%
run = notebook.open_experiment(
    "04_inference_scheme",
    NAME,
    profile,
    results_dir,
    reports_dir,
    datasets=datasets,
    segmentors=segmentors,
    seeds=seeds,
    device=device,
    overrides=overrides,
    levels=levels,
    train=train,
)
df, provenance, tables_dir, figures_dir = run.rows, run.provenance, run.tables_dir, run.figures_dir

# %% [markdown]
# ## Final-step mIoU and mBIoU per sampler and number of network evaluations
#
# Percent, mean ± std over seeds, single-scale. Each cell is its own evaluation with that many steps.

# %%
import pandas as pd

refined = df[df["method"] == "refined"]
for metric in ("mIoU", "mBIoU"):
    table = viz.summary_table(
        refined, index=["dataset", "segmentor", "sampler"], columns=["num_evals"], metric=metric, test="ss"
    )
    base = viz.summary_table(
        df[df["method"] == "base"], index=["dataset", "segmentor"], columns=[], metric=metric, test="ss"
    )
    viz.save_table(table.text, f"04_inference_scheme_{metric}", tables_dir)
    viz.save_table(table.stats, f"04_inference_scheme_{metric}_stats", tables_dir)
    display(Markdown(f"**{metric}** (base segmentor: {', '.join(base.stats['mean'].map('{:.2f}'.format))})"))
    display(table.text)

# %% [markdown]
# ## Metric versus step within one pass (each sampler's longest step grid; dashed: base segmentor)

# %%
n_evals = pd.to_numeric(df["num_evals"])
longest = n_evals == n_evals.groupby(df["sampler"]).transform("max")
curves = df[longest | (df["method"] == "base")]
for metric in ("mIoU", "mBIoU"):
    fig = viz.step_curves(curves, metric=metric, hue="sampler")
    viz.show_figure(fig, f"04_steps_{metric}", figures_dir)

# %%
samplers = set(refined["sampler"].astype(str))
lines = []
strict_samplers = {"strict": "strict", "strict_release": "the release's strict step"}
for strict, name in strict_samplers.items():
    if not {"free_renoise", strict} <= samplers:
        lines.append(f"- Free re-noising and {name} were not both run: that comparison is not testable.")
        continue
    common = set(refined.loc[refined["sampler"] == "free_renoise", "num_evals"].astype(str))
    common &= set(refined.loc[refined["sampler"] == strict, "num_evals"].astype(str))
    top = max(common, key=float)
    for what, frame in (
        (f"at {top} evaluations", df[df["num_evals"].astype(str) == top]),
        ("averaged over the common step grids", df),
    ):
        pairs = viz.compare_levels(frame, "sampler", "free_renoise", strict)
        for (dataset, segmentor), g in pairs.groupby(["dataset", "segmentor"]):
            v = viz.verdict_of(g["a"], g["b"])
            lines.append(
                f"- **{dataset} / {segmentor}**, {what}: {viz.describe_delta(g['a'], g['b'], label=f'free re-noising minus {name}')} -> *{v}*"
            )
            if v == "supports":
                lines.append(f"  The relaxed scheme is significantly better than {name}.")
            elif v == "contradicts":
                lines.append(f"  **Here {name} is significantly better than free re-noising.**")
            else:
                lines.append(
                    f"  No significant difference: {name} is not needed, but 'even better' is not shown."
                )
if {"free_renoise", "single_step"} <= samplers:
    pairs = viz.compare_levels(curves, "sampler", "free_renoise", "single_step", pair_on=[])
    for (dataset, segmentor), g in pairs.groupby(["dataset", "segmentor"]):
        v = viz.verdict_of(g["a"], g["b"])
        lines.append(
            f"- **{dataset} / {segmentor}**, several steps versus one: {viz.describe_delta(g['a'], g['b'], label='free re-noising (longest grid) minus single step')} -> *{v}*"
        )
display(Markdown("\n".join(lines)))
