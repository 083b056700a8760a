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
# # 01 · Main results: base segmentors and their refined versions
#
# Dataset x base segmentor: parameter counts, mIoU of the frozen base and of the refined prediction,
# single-scale (ss) and multi-scale + flip (ms), and boundary mIoU (mBIoU); mean ± std over seeds.

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

from diffseg import experiments as ex
from diffseg import notebook, viz

NAME = "main_results"

# %%
run = notebook.open_experiment(
    "01_main_results",
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
_ = viz.save_table(provenance, "01_provenance", tables_dir)  # a path: not for the report

# %% [markdown]
# ## Base versus refined (percent, mean ± std over seeds)

# %%
main = viz.summary_table(
    df, index=["dataset", "segmentor"], columns=["metric", "test", "method"], metric=["mIoU", "mBIoU"]
)
viz.save_table(main.text, "01_main_results", tables_dir)
viz.save_table(main.stats, "01_main_results_stats", tables_dir)
display(main.text)

# %%
delta = viz.delta_table(
    df, index=["dataset", "segmentor"], columns=["metric", "test"], metric=["mIoU", "mBIoU"]
)
viz.save_table(delta.text, "01_main_delta", tables_dir)
viz.save_table(delta.stats, "01_main_delta_stats", tables_dir)
display(delta.text)

# %%
for metric, test in (("mIoU", "ss"), ("mIoU", "ms"), ("mBIoU", "ss")):
    s = delta.stats[(delta.stats["metric"] == metric) & (delta.stats["test"] == test)]
    if s.empty:
        continue
    display(Markdown(f"### {metric} ({test})"))
    display(
        Markdown(
            viz.describe_table(
                s,
                ["dataset", "segmentor"],
                metric=metric,
                claim=f"refinement raises {metric} ({test}) over the base",
            )
        )
    )

# %% [markdown]
# ## Published reference (paper profile only)
#
# The authors' README numbers and the mmsegmentation model-zoo baselines, for orientation only: they come
# from other weights and other hardware, and are never mixed with the numbers measured above.

# %%
published = None
if profile == "paper":
    published = ex.PUBLISHED
    cols = [c for c in ("method", "metric", "test") if c in published.columns]
    ref_table = published.pivot_table(
        index=["dataset", "segmentor"], columns=cols, values="value", aggfunc="first"
    )
    viz.save_table(ref_table, "01_published_reference", tables_dir)
    display(Markdown("**Published (not measured here):**"))
    display(ref_table)
else:
    display(
        Markdown(
            f"*Profile {profile!r} uses synthetic data: the published numbers are not comparable and not shown.*"
        )
    )

# %%
reference = None
if published is not None:
    reference = published[(published["metric"] == "mIoU") & (published["method"] == "refined")]
    if "test" in reference.columns:
        reference = reference[reference["test"] == "ss"]
fig = viz.bar_compare(
    df, x="segmentor", hue="method", metric="mIoU", test="ss", reference=reference, panel=["dataset"]
)
viz.show_figure(fig, "01_main_mIoU", figures_dir)

# %% [markdown]
# ## Per-class IoU change

# %%
fig = viz.per_class_delta(df)
viz.show_figure(fig, "01_per_class_delta", figures_dir)
per_class = viz.paired_deltas(df, "IoU", test="ss")
if len(per_class):
    m = per_class.groupby(["dataset", "segmentor", "class_name"])["delta"].mean()
    gained, lost = int((m > 0).sum()), int((m < 0).sum())
    display(
        Markdown(
            f"Across {len(m)} (model, class) pairs, refinement raises the class IoU in {gained} and lowers it in "
            f"{lost} (mean over seeds); the largest gain is {m.max():+.2f} points, the largest loss {m.min():+.2f}."
        )
    )
