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
# # 08 · What the mask prior has learned
#
# Ground-truth masks noised at several levels and denoised in one shot by the refiner, and masks sampled from
# pure noise with the image condition zeroed: the shapes the prior believes in without seeing an image.

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
n_images = 2
n_samples = 8

# %%
from IPython.display import Markdown, display

from diffseg import experiments as ex
from diffseg import notebook, viz

NAME = "mask_prior"

# %%
run = notebook.open_experiment(
    "08_mask_prior",
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
import pandas as pd

runs = df[df["method"] == "refined"].sort_values("seed").drop_duplicates(["dataset", "segmentor"])
prior_rows = []
for _, run in runs.iterrows():
    tag = f"{run['dataset']}_{run['segmentor']}"
    try:
        arts = ex.load_artifacts(run["run_id"], results_dir=results_dir, profile=profile)
    except FileNotFoundError as e:
        display(Markdown(f"**No artifacts for {tag}:** {e}"))
        continue
    palette = ex.dataset_info(run["dataset"])["palette"]
    display(Markdown(f"## {run['dataset']} / {run['segmentor']} (seed {run['seed']})"))
    table = viz.prior_table(arts).assign(dataset=run["dataset"], segmentor=run["segmentor"])
    prior_rows.append(table)
    display(table)
    noisiest = table.iloc[int(table["noised_acc"].idxmin())]
    helped = int((table["gain"] > 0).sum())
    display(
        Markdown(
            f"At the noisiest level ({noisiest['level']}) {noisiest['noised_acc']:.1f}% of pixels still carry their "
            f"GT class; one denoising step brings that to {noisiest['denoised_acc']:.1f}% "
            f"({noisiest['gain']:+.1f} points). Denoising raises agreement with GT at {helped} of {len(table)} levels"
            + ("." if helped == len(table) else f"; at the other {len(table) - helped} it does not.")
        )
    )
    fig = viz.prior_grid(arts, palette, n=n_images)
    viz.show_figure(fig, f"08_prior_denoise_{tag}", figures_dir)
    fig = viz.prior_samples(arts, palette, n=n_samples)
    viz.show_figure(fig, f"08_prior_samples_{tag}", figures_dir)

# %%
prior = pd.concat(prior_rows, ignore_index=True) if prior_rows else pd.DataFrame()
viz.save_table(prior, "08_mask_prior", tables_dir)
display(prior)
