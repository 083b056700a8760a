"""The pages around the notebooks: ``reports/index.html`` (findings at a glance) and each report's header.

Both are computed from the results store (`diffseg.findings`), so the index and the top of a report give the
same verdict with the same numbers. Nothing here depends on the time or the machine it runs on: unchanged
results render to identical bytes, and the commit shown is the one recorded with the results, not the checkout's.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import pandas as pd

from diffseg import findings as fd
from diffseg.atomic import atomic_write
from diffseg.paths import project_root, resolve
from diffseg.profiles import scale
from diffseg.study.ablation import Ablation
from diffseg.study.store import open_store

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
    "10_learning_and_budget": "Learning curves and budget curves",
}
_VERDICT_COLOURS = {
    "supported": "#1a7f37",
    "contradicted": "#cf222e",
    "mixed": "#9a6700",
    "partly": "#9a6700",
}
_STYLE = """
.ds-header, .ds-finding { font-family: system-ui, sans-serif; line-height: 1.45; }
.ds-nav { display: flex; gap: 1.2rem; font-size: .95rem; margin: .2rem 0 .6rem; }
.ds-scale { background: #fff8c5; border: 1px solid #d4a72c; padding: .35rem .6rem; border-radius: 4px; }
.ds-finding { border: 1px solid #d0d7de; border-radius: 6px; padding: .6rem .9rem; margin: .8rem 0;
  overflow: auto; }
.ds-finding img { float: right; margin: 0 0 .4rem 1rem; border: 1px solid #d0d7de; }
.ds-finding h3 { margin: .1rem 0 .3rem; }
.ds-verdict { font-weight: 600; }
table.ds-contrasts { border-collapse: collapse; font-size: .92rem; }
table.ds-contrasts td, table.ds-contrasts th { padding: .15rem .55rem; border-bottom: 1px solid #ddd;
  text-align: left; }
"""


def page_title(stem: str) -> str:
    """``"04 · Finding 3: strict vs relaxed inference"`` for a report stem."""
    return f"{stem[:2]} · {TITLES.get(stem, stem)}"


def _verdict_html(verdict: str) -> str:
    colour = next((c for k, c in _VERDICT_COLOURS.items() if verdict.startswith(k)), "#57606a")
    return f'<span class="ds-verdict" style="color:{colour}">{html.escape(verdict)}</span>'


_NO_STABILITY = "no budget curve: the store holds no learning curves for this finding's key contrast"
# what the two words mean, once per page that shows finding cards
STABILITY_RULE = (
    "A key contrast is <b>settled</b> when, over the last third of its budget curve (the learning-curve points on "
    "the curve subset), its sign and its verdict (95% interval excludes zero, or not) do not change; "
    "<b>resolved</b> when at its last point the interval excludes zero or its half-width is at most 0.5 mIoU "
    "(then there is no difference larger than 0.5). Report 10 draws the curves."
)


def _stability_html(finding: fd.Finding) -> str:
    """The card's budget table: per key contrast and setting, its budget, seeds, settled and resolved."""
    if not finding.stability:
        return f"<p><b>Settled and resolved?</b> {_NO_STABILITY}.</p>"
    rows = "".join(
        f"<tr><td>{html.escape(c)}</td><td>{html.escape(s)}</td><td>{b}</td><td>{n}</td>"
        f"<td>{html.escape(settled)}</td><td>{html.escape(resolved)}</td><td>{html.escape(reads)}</td></tr>"
        for c, s, b, n, settled, resolved, reads in finding.stability
    )
    return (
        "<p><b>Settled and resolved?</b> The key contrast over its budget curve (curve subset):</p>"
        '<table class="ds-contrasts"><tr><th>key contrast</th><th>setting</th><th>budget (iterations)</th>'
        "<th>seeds</th><th>settled</th><th>resolved</th><th>at the end of the budget</th></tr>"
        f"{rows}</table>"
    )


def finding_html(finding: fd.Finding, thumbnail: str | None = None, link: bool = False) -> str:
    """A finding as an HTML card: claim, verdict, rule and one row per contrast (effect with its 95% interval)."""
    title = html.escape(finding.title)
    page = f"{finding.report}.html"
    head = f'<a href="{page}">{title}</a>' if link else title
    img = ""
    if thumbnail:
        img = f'<a href="{page}"><img src="{html.escape(thumbnail)}" width="300" alt="key figure of {title}"></a>'
    if finding.contrasts:
        rows = "".join(
            f"<tr><td>{html.escape(c.setting)}</td><td>{html.escape(c.label)}</td>"
            f"<td>{html.escape(c.interval)}</td><td>{c.n}</td><td>{html.escape(c.verdict)}</td></tr>"
            for c in finding.contrasts
        )
        table = (
            '<table class="ds-contrasts"><tr><th>setting</th><th>paired difference</th>'
            "<th>mean [95% interval], mIoU points</th><th>seeds</th><th>test</th></tr>"
            f"{rows}</table>"
        )
    else:
        table = "<p>No results for this finding in the store yet.</p>"
    return (
        f'<div class="ds-finding">{img}<h3>{head}</h3>'
        f"<p><b>Claim:</b> {html.escape(finding.claim)}</p>"
        f"<p><b>Verdict here:</b> {_verdict_html(finding.verdict)} ({html.escape(finding.rule)}; "
        "paired t test over seeds at the 5% level).</p>"
        f"{table}{_stability_html(finding)}"
        f"<p><b>Learning curves flat?</b> {html.escape(finding.convergence)}</p></div>"
    )


def _load(profile: str, results_dir: str | Path) -> pd.DataFrame:
    return open_store(results_dir, profile).load()


def commits(df: pd.DataFrame) -> str:
    """The commits recorded with the results (``"a84cf64"``; several joined; "none" for an empty store)."""
    if df.empty or "git_commit" not in df.columns:
        return "none"
    return ", ".join(sorted(map(str, df["git_commit"].dropna().unique())))


def made_on(df: pd.DataFrame, profile: str, results_dir: str | Path) -> str:
    """Which machine(s) made the rows ``df`` of the store, from its machines table (`diffseg.machines.made_on`):
    the store's data, never the host that renders the page."""
    from diffseg import machines

    return machines.made_on(df, machines.load(open_store(results_dir, profile).root))


def portable_path(path: str | Path) -> str:
    """``path`` as a reader of the report can use it: relative to the working folder when inside it, under
    ``$DIFFSEG_DATA`` when inside that, else only its last two parts (never the build machine's home or /tmp).
    The working folder is the project's (`diffseg.paths`), wherever the kernel started."""
    p = Path(path).resolve()
    for root, name in ((project_root(), None), (os.environ.get("DIFFSEG_DATA"), "$DIFFSEG_DATA")):
        if root is None:
            continue
        try:
            rel = p.relative_to(Path(root).resolve())
        except ValueError:
            continue
        return str(rel) if name is None else f"{name}/{rel}"
    return str(Path(*p.parts[-2:]))


def page_header(
    stem: str, profile: str, results_dir: str | Path = "results", ablation: Ablation | None = None
) -> str:
    """The HTML a report opens with: links to the index and its neighbours, the profile's scale, its finding.

    An ablation's page (``ablation`` with levels or overrides) lives in ``ablations/`` below the reports, links
    one level up, and names the default study's verdict only by its link: its own rows are not that study."""
    own = ablation is not None and not ablation.is_default
    up = "../" if own else ""
    stems = list(TITLES)
    i = stems.index(stem) if stem in stems else -1
    nav = [f'<a href="{up}index.html">&larr; index: findings at a glance</a>']
    if own:
        nav.append(f'<a href="../{stem}.html">the default study of this report</a>')
    else:
        if i > 0:
            nav.append(f'<a href="{stems[i - 1]}.html">previous: {html.escape(page_title(stems[i - 1]))}</a>')
        if 0 <= i < len(stems) - 1:
            nav.append(
                f'<a href="{stems[i + 1]}.html">next: {html.escape(page_title(stems[i + 1]))} &rarr;</a>'
            )
    df = _load(profile, results_dir)
    if own:
        body = (
            "<p>This page is an ablation run: its tables hold only its own arms (with the profile's default "
            "level as the reference). The default study's verdict is on the index.</p>"
        )
        rows = open_store(results_dir, profile).load_ablation(ablation.id)
    else:
        finding = fd.finding_of_report(df, stem)
        body = (
            finding_html(finding) + f'<p class="ds-scale">{STABILITY_RULE}</p>'
            if finding is not None
            else "<p>This report tests none of the paper's findings; the index lists them.</p>"
        )
        rows = df
    commit = commits(rows)
    return (
        f'<style>{_STYLE}</style><div class="ds-header"><div class="ds-nav">{" ".join(nav)}</div>'
        f'<p class="ds-scale">{html.escape(scale(profile))} Results from commit '
        f"<code>{html.escape(commit)}</code>. {html.escape(made_on(rows, profile, results_dir))}</p>"
        f"{body}</div>"
    )


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


def _reproduce_command(profile: str) -> str:
    """The make command that renders ``profile``'s reports (the dry run is the paper profile's DRY_RUN=1)."""
    if profile == "cpu":
        return "make reproduce"
    if profile == "paper-dry":
        return "make reproduce PROFILE=paper DRY_RUN=1"
    return f"make reproduce PROFILE={profile}"


def write_index(profile: str, results_dir: str | Path, reports_dir: str | Path) -> Path:
    """Write ``{reports_dir}/index.html``: the profile's scale, every finding's card, the headline table, links."""
    reports_dir = resolve(reports_dir)
    df = _load(profile, results_dir)
    cards = []
    for finding in fd.all_findings(df):
        thumb = f"figures/{finding.figure}.png"
        cards.append(finding_html(finding, thumb if (reports_dir / thumb).is_file() else None, link=True))
    table = headline_table(df) if not df.empty else pd.DataFrame()
    table_html = (
        table.to_html(index=False, border=0, classes="ds-contrasts")
        if not table.empty
        else "<p>No main results in the store yet.</p>"
    )
    links = [
        f'<li><a href="{html.escape(p.name)}">{html.escape(page_title(p.stem))}</a></li>'
        for p in sorted(reports_dir.glob("[0-9][0-9]_*.html"))
    ]
    n_seeds = int(df["seed"].nunique()) if not df.empty else 0
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>diffseg study ({html.escape(profile)})</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 64rem; margin: 2rem auto; padding: 0 1rem;
  line-height: 1.45; }}
code {{ background: #f4f4f4; padding: 0 .2rem; }}
{_STYLE}
</style></head><body>
<h1>diffseg: Denoising Diffusion Semantic Segmentation with Mask Prior Modeling, reproduced</h1>
<p class="ds-scale">{html.escape(scale(profile))} {html.escape(made_on(df, profile, results_dir))}</p>
<p>Profile <code>{html.escape(profile)}</code> &middot; results from commit <code>{html.escape(commits(df))}</code>
&middot; {len(df)} result rows &middot; up to {n_seeds} seed(s) per setting.</p>
<h2>Findings at a glance</h2>
<p>Each verdict is computed from the numbers below it: per seed a paired difference in mIoU points, over seeds
its mean with a Student-t 95% interval. It is what these runs say, at this profile's scale, whatever the paper
says. {STABILITY_RULE}</p>
{chr(10).join(cards)}
<h2>Main table: base vs refined (single-scale, final step; percent, mean ± std over seeds)</h2>
{table_html}
<h2>Reports</h2>
<ul>
{chr(10).join(links)}
</ul>
<p>Regenerate with <code>{html.escape(_reproduce_command(profile))}</code> (profile <code>{html.escape(profile)}</code>). Tables are in
<code>tables/</code>, figures in <code>figures/</code>, every number in
<code>{html.escape(Path(results_dir).name)}/{html.escape(profile)}/results.csv</code>.</p>
</body></html>
"""
    return atomic_write(reports_dir / "index.html", lambda tmp: Path(tmp).write_text(body))


__all__ = [
    "TITLES",
    "commits",
    "finding_html",
    "headline_table",
    "made_on",
    "page_header",
    "page_title",
    "portable_path",
    "write_index",
]
