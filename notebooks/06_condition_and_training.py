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
# # 06 · Condition, one- versus two-stage training, EMA
#
# One factor at a time from the release's defaults (condition on the decode-head features, two-stage training,
# EMA on): each table compares the levels of one factor with the others at their default.

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
levels = {}  # {factor: [values]} to run instead of the defaults; factors here: condition, training, ema
train = None  # None: train missing rows, except inside JupyterLab (there, set True to train)

# %%
from IPython.display import Markdown, display

from diffseg import notebook, viz

NAME = "condition_and_training"

# %%
run = notebook.open_experiment(
    "06_condition_and_training",
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

# %%
comparisons = {
    "condition": [("features", "logits"), ("features", "mask")],
    "training": [("two-stage", "one-stage")],
    "ema": [("on", "off")],
}
for factor, pairs in comparisons.items():
    if factor not in df.columns or df[factor].nunique() < 2:
        display(Markdown(f"*Factor {factor!r} is not varied in these runs.*"))
        continue
    sub = viz.one_factor(df, factor)
    display(Markdown(f"## {factor}"))
    delta = viz.delta_table(sub, index=["dataset", "segmentor"], columns=[factor], test="ss")
    viz.save_table(delta.text, f"06_{factor}", tables_dir)
    viz.save_table(delta.stats, f"06_{factor}_stats", tables_dir)
    display(delta.text)
    fig = viz.bar_compare(sub, x=factor, hue="method", test="ss")
    viz.show_figure(fig, f"06_{factor}", figures_dir)
    lines = []
    for a, b in pairs:
        if not {a, b} <= set(sub[factor].astype(str)):
            lines.append(f"- {a} versus {b}: not testable, one level was not run.")
            continue
        cmp = viz.compare_levels(sub, factor, a, b)
        for (dataset, segmentor), g in cmp.groupby(["dataset", "segmentor"]):
            v = viz.verdict_of(g["a"], g["b"])
            lines.append(
                f"- **{dataset} / {segmentor}**: {viz.describe_delta(g['a'], g['b'], label=f'{a} minus {b}')} -> *{v}* (for the release's choice, {a})"
            )
            if v == "contradicts":
                lines.append(f"  **Here {b} is significantly better than the release's choice {a}.**")
    display(Markdown("\n".join(lines)))
