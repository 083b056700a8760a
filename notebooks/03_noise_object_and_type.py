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
# # 03 · Finding 2: what the noise is added to matters more than the type of noise
#
# Noise object (ground truth, base prediction, first prediction) against noise type (kernel). The paper profile
# runs the full grid; the synthetic profiles run an L: the noise object under the uniform kernel, and the kernel
# on the first prediction (the release's choices), which asks the paper's two questions with fewer trainings.
# The finding holds if the noise object moves mIoU more than the kernel does: per seed, the range of the noise
# object's effect minus the range of the kernel's, tested across seeds. An effect is the main effect on a full
# grid and, on the L, the simple effect along its arm (the other factor at the corner, first / uniform).

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
levels = {}  # {factor: [values]} to run instead of the defaults; factors here: noise_object, kernel
train = None  # None: train missing rows, except inside JupyterLab (there, set True to train)

# %%
from IPython.display import Markdown, display

from diffseg import notebook, viz

NAME = "noise_object_and_type"

# %%
run = notebook.open_experiment(
    "03_noise_object_and_type",
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
# ## Refined mIoU and its change over the base (percent, final step, single-scale)

# %%
summary = viz.summary_table(
    df[df["method"] == "refined"],
    index=["dataset", "segmentor", "noise_object"],
    columns=["kernel"],
    test="ss",
)
viz.save_table(summary.text, "03_noise_object_and_type", tables_dir)
display(summary.text)
delta = viz.delta_table(df, index=["dataset", "segmentor", "noise_object"], columns=["kernel"], test="ss")
viz.save_table(delta.stats, "03_noise_object_and_type_delta", tables_dir)
display(delta.text)

# %%
fig = viz.delta_heatmap(delta.stats, index="noise_object", columns="kernel")
viz.show_figure(fig, "03_noise_object_and_type_heatmap", figures_dir)

# %%
ranges = viz.main_effect_ranges(df, ["noise_object", "kernel"], test="ss")
viz.save_table(ranges, "03_main_effect_ranges", tables_dir)
display(ranges)
for (dataset, segmentor), g in ranges.groupby(["dataset", "segmentor"]):
    n_obj, n_ker = df["noise_object"].nunique(), df["kernel"].nunique()
    if n_obj < 2 or n_ker < 2:
        display(
            Markdown(
                f"**{dataset} / {segmentor}**: the grid has {n_obj} noise object(s) and {n_ker} kernel(s); finding 2 needs at least two of each."
            )
        )
        continue
    text = viz.describe_delta(
        g["noise_object"],
        g["kernel"],
        metric="mIoU points of range",
        label="noise-object effect minus noise-type effect",
    )
    v = viz.verdict_of(g["noise_object"], g["kernel"], expect="increase")
    plain = {
        "supports": "**Finding 2 is supported**: the noise object matters more than the noise type.",
        "contradicts": "**Finding 2 is contradicted**: the noise type matters more than the noise object here.",
        "inconclusive": "**Finding 2 is not shown**: the two effects cannot be told apart with these seeds.",
    }[v]
    display(Markdown(f"**{dataset} / {segmentor}**: {text}. {plain}"))
