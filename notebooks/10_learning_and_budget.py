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
# # 10 · Learning curves and budget curves: converged, or still improving?
#
# Every training records validation mIoU while it runs (a fixed subset of the validation split, single-scale;
# see `diffseg.curves`). This report shows those curves for the base segmentors and for every arm a finding's
# verdict rests on, says which have flattened, and draws each finding's key contrast against the training budget:
# the paired difference over seeds with its 95% interval at every recorded iteration.

# %% tags=["parameters"]
profile = "cpu"
results_dir = "results"
reports_dir = None  # None: the profile's (reports/ for cpu, reports-<profile>/ otherwise)
device = "auto"  # the common parameter set; this report only reads the results store

# %%

from IPython.display import HTML, Markdown, display

from diffseg import budget, curves, notebook, profiles, report, viz
from diffseg import experiments as ex

# folders resolve against the project root, wherever the kernel started (diffseg.paths)
results_dir, tables_dir, figures_dir = notebook.open_report(profile, results_dir, reports_dir)
df = ex.load_results(profile, results_dir)
display(HTML(report.page_header("10_learning_and_budget", profile, results_dir)))
has_curves = not budget.curve_rows(df).empty
display(
    Markdown(
        f"Plateau criterion: the last two points of a curve (mean over seeds) within {curves.PLATEAU_TOL} mIoU "
        f"points; anything else is labelled *still improving* (or *still falling*). "
        f"{budget.last_decay_note(profiles.profile_config(profile))} Curve points are evaluated on "
        f"the first {curves.MAX_IMAGES} validation images, so their values differ a little from the full-split "
        "numbers of the other reports."
        if has_curves
        else f"**No learning curves are recorded for profile `{profile}`** (its trainings ran with "
        "`train.eval_every = 0`): nothing here can tell a converged comparison from an undertrained one."
    )
)

# %% [markdown]
# ## Base segmentors

# %%
base = budget.base_curves(df)
coverage = budget.base_class_coverage(df)
viz.save_table(coverage, "10_base_class_coverage", tables_dir)
display(Markdown("Which classes the frozen bases find at all (final base, full validation split):"))
display(coverage)
if len(base):
    table = budget.plateau_table(base.assign(curve="final_step"), ["dataset", "segmentor"])
    viz.save_table(table, "10_base_plateau", tables_dir)
    display(table)
    fig = budget.curves_figure(base.assign(curve="final_step"), hue="segmentor", title="base segmentors")
    viz.show_figure(fig, "10_base_curves", figures_dir)

# %% [markdown]
# ## Refiners: the arms the verdicts rest on (final step of each arm's sampler)

# %%
HUES = {
    "main_results": "arm",
    "naive_integration": "arm",
    "noise_object_and_type": "arm",
    "inference_scheme": "arm",
    "condition_and_training": "arm",
}
status = []
for experiment, hue in HUES.items():
    c = budget.arm_curves(df, experiment)
    if c.empty:
        continue
    keys = [k for k in ("dataset", "segmentor", "arm") if k in c.columns]
    t = budget.plateau_table(c, keys).assign(experiment=experiment)
    status.append(t)
    display(Markdown(f"### {experiment}"))
    display(t.drop(columns="experiment"))
    fig = budget.curves_figure(c, hue=hue, title=experiment)
    viz.show_figure(fig, f"10_curves_{experiment}", figures_dir)
if status:
    import pandas as pd

    status = pd.concat(status, ignore_index=True)
    viz.save_table(status, "10_refiner_plateau", tables_dir)
    moving = status[status["status"] != "flat"]
    display(
        Markdown(
            f"**{len(moving)} of {len(status)} arm curves are not flat** at the end of training: "
            + ", ".join(
                f"{r['experiment']}: {r['arm']} ({r['status']}, {r['last change']:+.2f})"
                for _, r in moving.iterrows()
            )
            if len(moving)
            else f"All {len(status)} arm curves are flat at the end of training."
        )
    )

# %% [markdown]
# ## Budget curves: each key contrast against training iterations
#
# Per recorded iteration, the paired per-seed difference (percent points) with its Student-t 95% interval.
# Free re-noising versus strict (finding 3) compares two samplers on the same trainings: every stage-2 curve point
# of a free re-noising arm also runs the strict sampler with the same number of network evaluations (the
# profile's `eval.num_evals`), so that contrast starts where stage 2 does.

# %%
budgets = budget.key_budget_curves(df)
if budgets:
    import pandas as pd

    viz.save_table(
        pd.concat([b.assign(contrast=t) for t, b in budgets], ignore_index=True),
        "10_budget_curves",
        tables_dir,
    )
    viz.show_figure(budget.budget_figure(budgets), "10_budget_curves", figures_dir)
    display(Markdown("From which iteration on each contrast's 95% interval keeps one sign:"))
    display(Markdown("\n".join(f"- **{t}**: {budget.settles(b)}." for t, b in budgets)))
    final = budget.final_contrasts(budgets)
    viz.save_table(final, "10_key_contrasts_final", tables_dir)
    display(
        Markdown(
            "Each key contrast at the end of its budget (curve subset): its 95% half-width, whether it is "
            f"**settled** (over the last {budget.SETTLE_WINDOW:.0%} of its budget neither its sign nor its verdict "
            "changes) and **resolved** (its interval excludes zero, or its half-width is at most "
            f"{budget.RESOLVED_HALF_WIDTH} mIoU points: no difference larger than that). "
            f"{int(final['settled'].eq('yes').sum())} of {len(final)} are settled, "
            f"{int(final['resolved'].eq('yes').sum())} resolved."
        )
    )
    display(final)
else:
    display(Markdown("No budget curves: the store holds no learning curves for these experiments."))
