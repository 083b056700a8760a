"""Tables, figures and computed prose over the results store (the notebooks are thin views over these helpers).

Everything here reads the long-format results DataFrame of ``diffseg.results`` (one row per run, method, step,
metric and class; ``value`` a fraction in [0, 1]) or the numpy artifacts of ``experiments.load_artifacts``.
Tables report percent points. Figures are built on ``matplotlib.figure.Figure`` directly, never through pyplot,
so library code keeps no global figure state: nothing leaks between calls and nothing is shown twice in a
notebook (the notebook calls ``show_figure``, from `diffseg.publish`, which saves and displays it). Prose is
computed from numbers (``describe_delta``, ``verdict``) so that a notebook can never claim what its data do not
show.

One concept per module: `masks` (masks as pictures), `selection` (rows of the results table), `tables`, `prose`
(verdicts and sentences), `figures` (over results), `artifact_figures`, `dataset_figures`. Everything public is
re-exported here, so a notebook reads ``viz.summary_table(...)``.
"""

from diffseg.publish import save_figure, save_table, show_figure
from diffseg.viz.artifact_figures import (
    artifact_summary,
    comparison_grid,
    prior_grid,
    prior_samples,
    prior_table,
    trajectory_grid,
)
from diffseg.viz.dataset_figures import (
    class_frequency,
    class_pixel_counts,
    dataset_samples,
)
from diffseg.viz.figures import (
    bar_compare,
    delta_heatmap,
    per_class_delta,
    step_curves,
)
from diffseg.viz.masks import (
    boundary_band,
    colorize,
    error_map,
    overlay,
    release_boundary_width,
)
from diffseg.viz.prose import (
    describe_delta,
    describe_stats,
    describe_table,
    experiment_intro,
    t_quantile_975,
    verdict,
    verdict_of,
)
from diffseg.viz.selection import (
    CLASS_METRICS,
    FACTORS,
    MEAN_METRICS,
    PANEL,
    REQUIRED_COLUMNS,
    factors_present,
    natural_order,
    one_factor,
    select,
)
from diffseg.viz.tables import (
    Summary,
    compare_levels,
    delta_table,
    effect_range,
    main_effect_ranges,
    paired_deltas,
    provenance_table,
    summary_table,
)

__all__ = [
    "CLASS_METRICS",
    "FACTORS",
    "MEAN_METRICS",
    "PANEL",
    "REQUIRED_COLUMNS",
    "Summary",
    "artifact_summary",
    "bar_compare",
    "boundary_band",
    "class_frequency",
    "class_pixel_counts",
    "colorize",
    "compare_levels",
    "comparison_grid",
    "dataset_samples",
    "delta_heatmap",
    "delta_table",
    "describe_delta",
    "describe_stats",
    "describe_table",
    "effect_range",
    "error_map",
    "experiment_intro",
    "factors_present",
    "main_effect_ranges",
    "natural_order",
    "one_factor",
    "overlay",
    "paired_deltas",
    "per_class_delta",
    "prior_grid",
    "prior_samples",
    "prior_table",
    "provenance_table",
    "release_boundary_width",
    "save_figure",
    "save_table",
    "select",
    "show_figure",
    "step_curves",
    "summary_table",
    "t_quantile_975",
    "trajectory_grid",
    "verdict",
    "verdict_of",
]
