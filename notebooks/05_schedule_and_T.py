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
# # 05 · Noise schedule and number of diffusion steps T
#
# Linear versus cosine keep-probability schedules, at several T; refined minus base mIoU.

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
levels = {}  # {factor: [values]} to run instead of the defaults; factors here: schedule, num_steps
train = None  # None: train missing rows, except inside JupyterLab (there, set True to train)

# %%
from IPython.display import Markdown, display

from diffseg import notebook, viz

NAME = "schedule_and_T"

# %%
run = notebook.open_experiment(
    "05_schedule_and_T",
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
# ## Refined minus base mIoU (percent points, mean ± std over seeds, final step, single-scale)

# %%
delta = viz.delta_table(df, index=["dataset", "segmentor", "schedule"], columns=["num_steps"], test="ss")
viz.save_table(delta.text, "05_schedule_and_T", tables_dir)
viz.save_table(delta.stats, "05_schedule_and_T_stats", tables_dir)
display(delta.text)
fig = viz.delta_heatmap(delta.stats, index="schedule", columns="num_steps")
viz.show_figure(fig, "05_schedule_and_T_heatmap", figures_dir)

# %%
display(
    Markdown(
        viz.describe_table(
            delta.stats,
            ["dataset", "segmentor", "schedule", "num_steps"],
            claim="refinement improves on the base",
        )
    )
)
lines = []
for (dataset, segmentor), g in delta.stats.groupby(["dataset", "segmentor"]):
    best, worst = g.loc[g["delta_mean"].idxmax()], g.loc[g["delta_mean"].idxmin()]
    lines.append(
        f"- **{dataset} / {segmentor}**: best {best['schedule']}, T={best['num_steps']} ({best['delta_mean']:+.2f}); worst {worst['schedule']}, T={worst['num_steps']} ({worst['delta_mean']:+.2f})."
    )
if "schedule" in df.columns and {"linear", "cosine"} <= set(df["schedule"]):
    pairs = viz.compare_levels(df, "schedule", "cosine", "linear")
    for (dataset, segmentor), g in pairs.groupby(["dataset", "segmentor"]):
        lines.append(
            f"- **{dataset} / {segmentor}**: {viz.describe_delta(g['a'], g['b'], label='cosine minus linear')} -> *{viz.verdict_of(g['a'], g['b'])}* (for 'cosine is better')."
        )
display(Markdown("\n".join(lines)))
