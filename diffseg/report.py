"""``reports/index.html``: links to every rendered notebook, with the headline table, date, commit and profile."""

from __future__ import annotations

import datetime as _dt
import html
import os
from pathlib import Path

import pandas as pd

from diffseg.results import ResultsStore, git_commit

TITLES = {
    "00_data": "The datasets",
    "01_main_results": "Main results: base vs refined",
    "02_naive_integration": "Finding 1: naive integrations of diffusion",
    "03_noise_object_and_type": "Finding 2: noise object vs noise type",
    "04_inference_scheme": "Finding 3: strict vs relaxed inference",
    "05_schedule_and_T": "Noise schedule and number of steps",
    "06_condition_and_training": "Condition, training stages and EMA",
    "07_qualitative": "Qualitative results and denoising trajectories",
    "08_mask_prior": "What the mask prior learned",
    "09_performance": "Performance: cost and gain",
}


def headline_table(df: pd.DataFrame) -> pd.DataFrame:
    """Main results: base vs refined (final step) mIoU and mBIoU, mean ± std over seeds, in percent."""
    main = df[(df["experiment"] == "main_results") & (df["class_name"] == "") & (df["test"] == "ss")]
    if main.empty:
        return pd.DataFrame()
    last = main.groupby("run_id")["step"].transform("max")
    main = main[(main["method"] == "base") | (main["step"] == last)]
    rows = []
    for (ds, seg), g in main.groupby(["dataset", "segmentor"]):
        row: dict[str, object] = {"dataset": ds, "segmentor": seg}
        for metric in ("mIoU", "mBIoU"):
            for method in ("base", "refined"):
                v = 100 * g[(g["metric"] == metric) & (g["method"] == method)].groupby("seed")["value"].mean()
                std = f" ± {v.std(ddof=1):.2f}" if len(v) > 1 else ""
                row[f"{method} {metric}"] = f"{v.mean():.2f}{std}"
            b = g[(g["metric"] == metric) & (g["method"] == "base")].set_index("seed")["value"]
            r = g[(g["metric"] == metric) & (g["method"] == "refined")].set_index("seed")["value"]
            d = 100 * (r - b).dropna()
            std = f" ± {d.std(ddof=1):.2f}" if len(d) > 1 else ""
            row[f"Δ {metric}"] = f"{d.mean():+.2f}{std}"
        row["seeds"] = int(g["seed"].nunique())
        rows.append(row)
    return pd.DataFrame(rows)


def write_index(profile: str, results_dir: str | Path, reports_dir: str | Path) -> Path:
    reports_dir = Path(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    df = ResultsStore(Path(results_dir) / profile).load()
    table = headline_table(df) if not df.empty else pd.DataFrame()
    links = []
    for page in sorted(reports_dir.glob("[0-9][0-9]_*.html")):
        title = TITLES.get(page.stem, page.stem)
        links.append(
            f'<li><a href="{html.escape(page.name)}">{html.escape(page.stem)}</a>: {html.escape(title)}</li>'
        )
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    table_html = (
        table.to_html(index=False, border=0, classes="headline")
        if not table.empty
        else "<p>No main results in the store yet.</p>"
    )
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>diffseg study ({html.escape(profile)})</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; line-height: 1.45; }}
table.headline {{ border-collapse: collapse; }} table.headline td, table.headline th {{ padding: .25rem .6rem;
border-bottom: 1px solid #ddd; text-align: right; }} code {{ background: #f4f4f4; padding: 0 .2rem; }}
</style></head><body>
<h1>diffseg: Denoising Diffusion Semantic Segmentation with Mask Prior Modeling, reproduced</h1>
<p>Profile <code>{html.escape(profile)}</code> &middot; generated {now} &middot; commit
<code>{html.escape(git_commit())}</code> &middot; {len(df)} result rows</p>
<h2>Headline: base vs refined (single-scale, final step; percent, mean ± std over seeds)</h2>
{table_html}
<h2>Reports</h2>
<ul>
{chr(10).join(links)}
</ul>
<p>Regenerate with <code>make reproduce</code> (profile <code>{html.escape(profile)}</code>). Tables are in
<code>tables/</code>, figures in <code>figures/</code>, every number in <code>{html.escape(str(results_dir))}/{html.escape(profile)}/results.csv</code>.</p>
</body></html>
"""
    path = reports_dir / "index.html"
    tmp = path.with_name("index.html.tmp")
    tmp.write_text(body)
    os.replace(tmp, path)
    return path
