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
# # 00 · The data
#
# Both datasets as the study sees them: split sizes, class frequencies and a few samples in each dataset's
# palette. Under the `smoke` and `cpu` profiles these are the synthetic scenes written in the ADE20K and
# Cityscapes layouts; under `paper` the real datasets (which must already be on disk).

# %% tags=["parameters"]
profile = "cpu"
results_dir = "results"
reports_dir = None  # None: the profile's (reports/ for cpu, reports-<profile>/ otherwise)
device = "auto"
datasets = ["ade20k", "cityscapes"]
max_items = None  # cap on the items scanned for class frequencies (None: the whole split)

# %%

import pandas as pd
from IPython.display import HTML, Markdown, display

from diffseg import data as dsdata
from diffseg import experiments as ex
from diffseg import notebook, report, viz
from diffseg.paths import resolve

# folders resolve against the project root, wherever the kernel started (diffseg.paths)
results_dir, tables_dir, figures_dir = notebook.open_report(profile, results_dir, reports_dir)
display(HTML(report.page_header("00_data", profile, results_dir)))
display(Markdown(ex.profile_notes(profile)))

# %%
splits: dict[str, dict[str, object]] = {}
rows = []
for name in datasets:
    cfg = ex.data_config(name, profile)
    root = resolve(cfg.root)  # a relative root is the project's, wherever the kernel started
    if cfg.synthetic:
        dsdata.ensure_synthetic(cfg)
    for split in ("train", "val"):
        try:
            # the raw dataset (no test pipeline): images in [0, 1], not normalised, at their stored size
            if name == "ade20k":
                ds = dsdata.ADE20K(root, split, reduce_zero_label=cfg.reduce_zero_label)
            else:
                ds = dsdata.Cityscapes(root, split)
        except FileNotFoundError as e:
            display(Markdown(f"**{name} / {split} is not available:** {e}"))
            continue
        splits.setdefault(name, {})[split] = ds
        rows.append(
            {
                "dataset": name,
                "split": split,
                "images": len(ds),
                "classes": ds.num_classes,
                "root": report.portable_path(root),
                "synthetic": cfg.synthetic,
            }
        )
counts = pd.DataFrame(rows)
viz.save_table(counts, "00_counts", tables_dir)
display(counts)

# %% [markdown]
# ## Class frequencies (validation split)

# %%
for name, by_split in splits.items():
    ds = by_split.get("val") or by_split.get("train")
    freq = viz.class_pixel_counts(ds, max_items=max_items)
    viz.save_table(freq, f"00_class_frequency_{name}", tables_dir)
    top = freq.sort_values("share", ascending=False).iloc[0]
    absent = int((freq["pixels"] == 0).sum())
    display(
        Markdown(
            f"**{name}**: {len(freq)} classes; the most frequent, *{top['class_name']}*, covers "
            f"{top['share']:.1f}% of labelled pixels; {absent} class(es) never occur in this split."
        )
    )
    fig = viz.class_frequency(ds, max_items=max_items, title=f"{name}: class frequency")
    viz.show_figure(fig, f"00_class_frequency_{name}", figures_dir)

# %% [markdown]
# ## Samples with their masks

# %%
for name, by_split in splits.items():
    ds = by_split.get("val") or by_split.get("train")
    fig = viz.dataset_samples(ds, n=4)
    viz.show_figure(fig, f"00_samples_{name}", figures_dir)
