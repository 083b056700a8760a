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
# # 02 · Finding 1: a naive integration of diffusion is not enough
#
# Textbook ways of bolting a diffusion process onto a segmentor, against the DDPS design, each compared with
# the frozen base segmentor it refines. The finding holds if some naive arm makes mIoU significantly *worse*
# than the base.

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
levels = {}  # this experiment varies no factor: it takes no levels (use overrides / seeds)
train = None  # None: train missing rows, except inside JupyterLab (there, set True to train)

# %%
from IPython.display import Markdown, display

from diffseg import notebook, viz

NAME = "naive_integration"

# %%
run = notebook.open_experiment(
    "02_naive_integration",
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
# ## mIoU per arm (percent, mean ± std over seeds, final step, single-scale)

# %%
summary = viz.summary_table(df, index=["dataset", "segmentor"], columns=["arm", "method"], test="ss")
viz.save_table(summary.text, "02_naive_integration", tables_dir)
display(summary.text)
delta = viz.delta_table(df, index=["dataset", "segmentor", "arm"], test="ss")
viz.save_table(delta.stats, "02_naive_integration_delta", tables_dir)
display(delta.text)

# %%
worse, better, unclear = [], [], []
for _, row in delta.stats.iterrows():
    name = f"{row['arm']} ({row['dataset']} / {row['segmentor']})"
    if viz.verdict(row["delta_mean"], row["delta_std"], int(row["n"]), expect="decrease") == "supports":
        worse.append(name)
    elif viz.verdict(row["delta_mean"], row["delta_std"], int(row["n"]), expect="increase") == "supports":
        better.append(name)
    else:
        unclear.append(name)
display(
    Markdown(
        viz.describe_table(delta.stats, ["dataset", "segmentor", "arm"], claim="the arm improves on the base")
    )
)
if worse:
    text = f"**Finding 1 is supported**: {', '.join(worse)} make(s) mIoU significantly worse than the base segmentor."
elif unclear:
    text = (
        "**Finding 1 is not shown by these runs**: no arm is significantly worse than the base segmentor "
        f"(inconclusive: {', '.join(unclear)})."
    )
else:
    text = (
        "**Finding 1 is contradicted here**: every integration improves significantly on the base segmentor."
    )
display(Markdown(text))

# %%
fig = viz.bar_compare(df, x="arm", hue="method", metric="mIoU", test="ss")
viz.show_figure(fig, "02_naive_integration_mIoU", figures_dir)
fig = viz.step_curves(df, metric="mIoU", hue="arm")
viz.show_figure(fig, "02_naive_integration_steps", figures_dir)
