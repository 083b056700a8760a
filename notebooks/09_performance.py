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
# # 09 · Gain versus cost
#
# What the refiner buys and what it costs: mIoU gain over the frozen base segmentor against the per-image latency
# of base + refiner relative to the base alone, per number of network evaluations and per UNet width. Latencies are
# medians over 5 runs at batch 1 on the machine that ran the study (on CPU, measured while the sweep's other
# worker was busy: read ratios, not absolute times). The GPU figures come from `benchmarks/gpu_check.sh`.

# %% tags=["parameters"]
profile = "cpu"
results_dir = "results"
reports_dir = None  # None: the profile's (reports/ for cpu, reports-<profile>/ otherwise)
device = "auto"
datasets = None  # None: the profile's datasets (ablations: ADE20K only under smoke / cpu)
segmentors = None  # None: the profile's first base segmentor
seeds = None  # None: the profile's seeds
# overrides: config overrides applied to every arm, in the CLI's syntax, e.g. ["train.stage2_iterations=200"]
overrides = []
levels = {}  # {factor: [values]} to run instead of the defaults; factors here: width, num_evals
train = None  # None: train missing rows, except inside JupyterLab (there, set True to train)

# %%

import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display
from matplotlib.figure import Figure

from diffseg import notebook, viz

NAME = "performance"

# %%
run = notebook.open_experiment(
    "09_performance",
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
# ## Gain and cost per UNet width and number of network evaluations

# %%
keys = ["dataset", "segmentor", "seed", "width", "num_evals", "run_id"]
mean = df[(df["class_name"] == "") & (df["test"] == "ss")]
last = mean.groupby("run_id")["step"].transform("max")
final = mean[(mean["method"] == "base") | (mean["step"] == last)]
wide = final.pivot_table(index=keys, columns=["metric", "method"], values="value", aggfunc="mean")
table = pd.DataFrame(
    {
        "params_refiner (M)": df.groupby(keys)["params_refiner"].first() / 1e6,
        "base mIoU": 100 * wide[("mIoU", "base")],
        "refined mIoU": 100 * wide[("mIoU", "refined")],
        "gain mIoU": 100 * (wide[("mIoU", "refined")] - wide[("mIoU", "base")]),
        "gain mBIoU": 100 * (wide[("mBIoU", "refined")] - wide[("mBIoU", "base")]),
        "base ms": wide[("latency_ms", "base")],
        "base + refiner ms": wide[("latency_ms", "refined")],
    }
).reset_index()
table["cost ratio"] = table["base + refiner ms"] / table["base ms"]
table["width"] = table["width"].astype(int)
table = table.drop(columns="run_id").sort_values(["dataset", "segmentor", "width", "num_evals"])
viz.save_table(table.round(3), "09_gain_vs_cost", tables_dir)
display(table.round(2))

# %%
fig = Figure(figsize=(6.4, 4.2), dpi=120)
ax = fig.subplots()
sns.scatterplot(
    data=table, x="cost ratio", y="gain mIoU", hue="width", style="num_evals", s=70, ax=ax, palette="viridis"
)
ax.axhline(0.0, color="k", lw=0.8, ls="--")
ax.axvline(3.0, color="grey", lw=0.8, ls=":", label="3x the base (latency target)")
ax.set_xscale("log")
ax.set_xlabel("latency of base + refiner / base alone (log scale)")
ax.set_ylabel("mIoU gain over the base (points)")
ax.legend(fontsize=7, loc="best")
fig.tight_layout()
viz.show_figure(fig, "09_gain_vs_cost", figures_dir)

# %%
lines = []
for (dataset, segmentor), g in table.groupby(["dataset", "segmentor"]):
    best = g.loc[g["gain mIoU"].idxmax()]
    cheap = g[g["cost ratio"] <= 3.0]
    cheap_text = (
        f"within 3x the base's latency the best gain is {cheap['gain mIoU'].max():+.2f} mIoU "
        f"(width {int(cheap.loc[cheap['gain mIoU'].idxmax(), 'width'])})"
        if not cheap.empty
        else "no setting stays within 3x the base's latency"
    )
    lines.append(
        f"- **{dataset} / {segmentor}**: the largest gain, {best['gain mIoU']:+.2f} mIoU, costs "
        f"{best['cost ratio']:.1f}x the base's latency (width {int(best['width'])}, {int(best['num_evals'])} "
        f"evaluation(s)); {cheap_text}. Single seed: differences below a few tenths of a point are noise."
    )
display(Markdown("\n".join(lines)))
