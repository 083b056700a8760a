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
# # 07 · Qualitative results: comparisons and denoising trajectories
#
# For the first seed of each model: image, ground truth, base, refined and the errors in the GT boundary band
# (green: fixed by the refinement, red: introduced, grey: wrong in both); then x_t and x0_hat at each step.

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
n_images = 4

# %%
from IPython.display import Markdown, display

from diffseg import experiments as ex
from diffseg import notebook, viz

NAME = "qualitative"

# %%
run = notebook.open_experiment(
    "07_qualitative",
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
delta = viz.delta_table(
    df, index=["dataset", "segmentor"], columns=["metric"], metric=["mIoU", "mBIoU"], test="ss"
)
viz.save_table(delta.text, "07_qualitative_delta", tables_dir)
display(delta.text)

# %%
runs = df[df["method"] == "refined"].sort_values("seed").drop_duplicates(["dataset", "segmentor"])
pixel_rows = []
for _, run in runs.iterrows():
    tag = f"{run['dataset']}_{run['segmentor']}"
    try:
        arts = ex.load_artifacts(run["run_id"], results_dir=results_dir, profile=profile)
    except FileNotFoundError as e:
        display(Markdown(f"**No artifacts for {tag}:** {e}"))
        continue
    palette = ex.dataset_info(run["dataset"])["palette"]
    s = viz.artifact_summary(arts)
    pixel_rows.append({"dataset": run["dataset"], "segmentor": run["segmentor"], "seed": run["seed"], **s})
    display(Markdown(f"## {run['dataset']} / {run['segmentor']} (seed {run['seed']})"))
    display(
        Markdown(
            f"On these {s['images']} stored images the refinement changes {s['changed_pct']:.1f}% of the labelled "
            f"pixels: it fixes {s['fixed_pct']:.1f}% and breaks {s['broken_pct']:.1f}%, so pixel accuracy goes "
            f"from {s['base_acc']:.1f}% to {s['refined_acc']:.1f}% ({s['refined_acc'] - s['base_acc']:+.1f} points)."
        )
    )
    fig = viz.comparison_grid(arts, palette, n=n_images)
    viz.show_figure(fig, f"07_comparison_{tag}", figures_dir)
    fig = viz.trajectory_grid(arts, palette, index=0)
    viz.show_figure(fig, f"07_trajectory_{tag}", figures_dir)

# %%
import pandas as pd

pixels = pd.DataFrame(pixel_rows)
viz.save_table(pixels, "07_pixel_changes", tables_dir)
display(pixels)
