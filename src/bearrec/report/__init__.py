"""Comparison report over training/evaluation runs: one self-contained HTML page and a Markdown twin.

The run-directory contract (the files the report reads) is bearrec.report.runs's docstring.

Runs are grouped into methods by config["method"] (else config["objective"]); numbers are mean ± std
(ddof=1) over the runs (seeds) of each method. Runs of different datasets (by the fingerprint `bearrec
train` records, else the dataset path) are refused: averaging them would mix datasets.
"""
from __future__ import annotations

import datetime as _dt
import json
import re
from pathlib import Path
from typing import Sequence

from ..errors import BearrecError, ConfigError, DataError
from ..io import atomic_open, write_json
from .bootstrap import summarize_seeds
from .columns import (HEADLINE_METRICS, MEANINGS, MIN_PER_EPOCH_MEANING, SEEDS_MEANING, column_name, cutoff_key,
                      format_interval, format_minutes, format_p_value, format_stat, headline_columns, legend)
from .compare import RowVectors, bootstrap_section, exact_against_beam, what_this_shows
from .figures import method_colors, plot_histogram, plot_losses, plot_metrics, plot_pruning
from .ordering import METHOD_ORDER
from .render import FigureBlock, md_table, render_html, render_markdown, table_block
from .runs import (RUN_KINDS, RunResult, baseline_methods, diagnosis_totals, discover_runs, group_by_method,
                   load_run, run_dataset, run_minutes)

# Settings that legitimately differ between runs of one method.
_RUN_SPECIFIC = re.compile(r"^(seed|objective|method|kind|run_name|output_dir|run_dir)$|_(dir|path)$")


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True)


# ---------------------------------------------------------------- sections

def _runs_section(groups: dict[str, list[RunResult]]) -> list[tuple]:
    """Which runs, seeds and settings produced the numbers, plus warnings about mixed settings."""
    runs = [r for rs in groups.values() for r in rs]

    def varying(rs: list[RunResult]) -> list[str]:
        keys = sorted({k for r in rs for k in r.config if not _RUN_SPECIFIC.search(k)})
        return [k for k in keys if len({_canonical(r.config.get(k)) for r in rs}) > 1]

    # settings are compared among runs of one kind: a baseline has none of a language model's settings
    shown = {kind: [k for k in varying([r for r in runs if r.kind == kind]) if k not in ("model", "dataset")]
             for kind in {r.kind for r in runs}}
    any_shown = any(shown.values())
    headers = (["Method", "Kind", "Seed", "Run", "Model", "Dataset"]
               + (["Settings that vary between runs"] if any_shown else []))
    rows = [[r.method, r.kind, str(r.seed), r.name, str(r.config.get("model", "–")),
             str(r.config.get("dataset", "–"))]
            + ([", ".join(f"{k}={_canonical(r.config.get(k))}" for k in shown[r.kind])] if any_shown else [])
            for r in runs]
    blocks = [("h2", "Runs"), table_block(headers, rows)]
    for method, rs in groups.items():
        mixed = varying(rs)
        if mixed:
            blocks.append(("note", f"The runs of {method} differ in {', '.join(mixed)}: "
                                   "its mean ± std mixes configurations, not only seeds."))
        seeds = [r.seed for r in rs]
        if len(set(seeds)) < len(seeds):
            blocks.append(("note", f"{method} has several runs with the same seed: {seeds}."))
    llm_runs = [r for r in runs if not r.is_baseline]
    for key, among in (("model", llm_runs), ("dataset", runs)):
        if len({_canonical(r.config.get(key)) for r in among}) > 1:
            blocks.append(("note", f"The runs do not all share the same {key}; compare methods with care."))
    return blocks


def _metrics_section(groups, summaries, colors, timing) -> list[tuple]:
    """The comparison table (headline metrics, min/epoch), the table of the other metrics and the metrics plot."""
    all_keys = sorted({k for s in summaries.values() for k in s}, key=cutoff_key)
    main = headline_columns(all_keys)
    other = [k for k in all_keys if k not in main]
    timed = any(t != (None, None) for t in timing.values())
    blocks: list[tuple] = [("h2", "Comparison (test split)"),
                           ("p", "Mean ± sample std over the seeds of each method; exact item match, "
                                 "K up to the beam size.")]
    seeds = {m: ", ".join(str(r.seed) for r in rs) for m, rs in groups.items()}
    blocks.append(table_block(["Method", "Seeds"] + [column_name(k) for k in main] + (["min/epoch"] if timed else []),
                              [[m, seeds[m]] + [format_stat(summaries[m].get(k), k) for k in main]
                               + ([format_minutes(*timing[m])] if timed else []) for m in groups]))
    blocks.append(legend(main, [("Seeds", SEEDS_MEANING)]
                         + ([("min/epoch", MIN_PER_EPOCH_MEANING)] if timed else [])))
    if other:
        blocks.append(("p", "Other test metrics (mean ± std over seeds):"))
        blocks.append(table_block(["Method"] + [column_name(k) for k in other],
                                  [[m] + [format_stat(summaries[m].get(k), k) for k in other] for m in groups]))
        blocks.append(legend(other))
    if main:
        blocks.append(("figure", FigureBlock("metrics", plot_metrics(summaries, main, colors),
                                              "Test metrics per method (error bars: std over seeds)")))
    return blocks


def _exact_section(groups) -> tuple[list[tuple], dict[str, dict]]:
    """Headline metrics and certified share of the exact top-K search, per method that has metrics-exact.json."""
    have = {m: [r for r in rs if r.metrics_exact is not None] for m, rs in groups.items()}
    have = {m: rs for m, rs in have.items() if rs}
    if not have:
        return [], {}
    summaries = {m: summarize_seeds([r.metrics_exact for r in rs]) for m, rs in have.items()}
    keys = headline_columns(sorted({k for s in summaries.values() for k in s}, key=cutoff_key))
    blocks: list[tuple] = [("h2", "Exact top-K search (test split)"),
                           ("p", "The same metrics when each model's top K is found by exact search instead of "
                                 "beam search (metrics-exact.json); mean ± std over seeds.")]
    blocks.append(table_block(["Method", "Seeds"] + [column_name(k) for k in keys] + ["Certified"],
                              [[m, ", ".join(str(r.seed) for r in rs)]
                               + [format_stat(summaries[m].get(k), k) for k in keys]
                               + [format_stat(summaries[m].get("certified_share"), "certified_share")]
                               for m, rs in have.items()]))
    blocks.append(legend(keys + ["certified_share"], [("Seeds", "the seeds with metrics-exact.json")]))
    missing = [r.name for rs in groups.values() for r in rs if r.metrics_exact is None and not r.is_baseline]
    baselines = [m for m in baseline_methods(groups) if m not in have]
    left_out = ([f"runs without metrics-exact.json ({', '.join(missing)})"] if missing else []) + (
        [f"the baselines {', '.join(baselines)} (n/a: they score the whole catalog)"] if baselines else [])
    if left_out:
        blocks.append(("note", "Left out of this table: " + "; ".join(left_out) + "."))
    return blocks, summaries


def _loss_section(groups, colors) -> list[tuple]:
    blocks: list[tuple] = [("h2", "Training and validation loss")]
    baselines = baseline_methods(groups)
    llm = {m: rs for m, rs in groups.items() if m not in baselines}
    if baselines:
        blocks.append(("p", f"Baselines ({', '.join(baselines)}) log no loss history: no curve for them."))
    png = plot_losses(llm, colors) if llm else None
    if png is None:
        if llm:
            blocks.append(("note", "No run logged a training or validation loss (log_history.json is empty)."))
        return blocks
    return blocks + [("figure", FigureBlock("losses", png, "Loss per logged step; one line per run (seed)"))]


def _diagnosis_section(groups, colors) -> tuple[list[tuple], dict]:
    """PruningRate@B table and plots from diagnosis.json, where present; baselines shown as n/a."""
    blocks: list[tuple] = [("h2", "Beam-search pruning diagnosis")]
    baselines = baseline_methods(groups)
    llm = {m: rs for m, rs in groups.items() if m not in baselines}
    with_diag = {m: [r for r in rs if r.diagnosis is not None] for m, rs in llm.items()}
    without = [r.name for rs in llm.values() for r in rs if r.diagnosis is None]
    with_diag = {m: rs for m, rs in with_diag.items() if rs}
    if baselines:
        blocks.append(("p", f"n/a for the baselines {', '.join(baselines)}: they do not decode with beam search, "
                            "so nothing is pruned."))
    if without:
        blocks.append(("note", f"No diagnosis file in {', '.join(without)}: left out of this section."))
    if not with_diag:
        return blocks, {}
    used = [f"{r.name}: {r.diagnosis_path.name} ({r.diagnosis.get('n_rows', '?')} rows)"
            for rs in with_diag.values() for r in rs if r.diagnosis_path is not None]
    if used:
        blocks.append(("note", "Diagnoses used (the full split where diagnosed, else the most rows): "
                               + "; ".join(used) + "."))
    summaries = {m: summarize_seeds([r.diagnosis for r in rs]) for m, rs in with_diag.items()}
    keys = sorted({k for s in summaries.values() for k in s}, key=cutoff_key)
    rows = []
    for m, rs in groups.items():
        if m in with_diag:
            rows.append([m, ", ".join(str(r.seed) for r in with_diag[m])]
                        + [format_stat(summaries[m].get(k), k) for k in keys])
        elif m in baselines:
            rows.append([m, ", ".join(str(r.seed) for r in rs)] + ["n/a"] * len(keys))
    blocks.append(table_block(["Method", "Seeds"] + [column_name(k) for k in keys], rows))
    blocks.append(legend(keys, [("Seeds", "the seeds with a diagnosis file"), ("n/a", "not applicable to a baseline")]
                         if baselines else [("Seeds", "the seeds with a diagnosis file")]))
    for key in [k for k in keys if k.startswith("pruning_rate@")]:
        have = {m: s for m, s in summaries.items() if key in s}
        blocks.append(("figure", FigureBlock(key.replace("@", "_at_"), plot_pruning(have, key, colors),
                                              f"{column_name(key)} per method (mean ± std over seeds)")))
    for field, name, xlabel, caption in (
            ("pruned_step_histogram", "pruned_steps", "decoding step (1 = first response token)",
             "Where positives are pruned: decoding step at which the positive leaves the beam"),
            ("positive_token_rank_histogram", "positive_token_ranks", "rank of the positive token at its step",
             "Rank of positive tokens in their step's next-token distribution")):
        hists = {}
        for m, rs in with_diag.items():
            total: dict[str, float] = {}
            for r in rs:
                for bucket, count in r.diagnosis.get(field, {}).items():
                    total[str(bucket)] = total.get(str(bucket), 0) + count
            if total:
                hists[m] = total
        if hists:
            blocks.append(("figure", FigureBlock(name, plot_histogram(hists, colors, xlabel, caption), caption)))
        else:
            blocks.append(("note", f"No run reports {field}: plot left out."))
    return blocks, summaries


# ---------------------------------------------------------------- entry point

def write_report(runs: Sequence[RunResult | str | Path], output_dir: str | Path, *,
                 title: str = "bearrec: method comparison", bootstrap_metric: str = "ndcg@10",
                 n_resamples: int = 10000) -> tuple[Path, Path]:
    """Write report.html (self-contained) and report.md (+ PNG files) comparing methods over seeds.

    Also writes summary.json (per method: metrics, diagnosis, timing, exact-search metrics; the
    pairwise bootstrap and the "what this shows" sentences) beside them, for scripts. Returns (html_path, md_path).
    """
    if not re.fullmatch(r"(hr|ndcg|mrr)@[1-9]\d*", bootstrap_metric):
        raise ConfigError(f"bootstrap_metric must look like 'ndcg@10', got {bootstrap_metric!r}.")
    loaded = [r if isinstance(r, RunResult) else load_run(r) for r in runs]
    if not loaded:
        raise BearrecError("no runs to report on. Fix: pass at least one run directory.")
    datasets: dict[str, list[str]] = {}
    for run in loaded:
        datasets.setdefault(run.dataset, []).append(run.name)
    if len(datasets) > 1:
        listing = "; ".join(f"{', '.join(names)} on {str(run_dataset(loaded, d))}" for d, names in datasets.items())
        raise ConfigError(f"these runs were evaluated on {len(datasets)} different datasets ({listing}); averaging "
                          "them would mix datasets. Fix: report the runs of each dataset separately.")
    groups = group_by_method(loaded)
    colors = method_colors(groups)
    summaries = {m: summarize_seeds([r.metrics for r in rs]) for m, rs in groups.items()}
    timing = {m: run_minutes(rs) for m, rs in groups.items()}
    vectors = RowVectors()

    shows, headline_boot = what_this_shows(groups, summaries, vectors, n_resamples)
    blocks: list[tuple] = [("p", f"{len(loaded)} runs, {len(groups)} methods; generated by bearrec "
                                 f"{_version()} on {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC."),
                           ("h2", "What this shows"), ("list", shows)]
    blocks += _metrics_section(groups, summaries, colors, timing)
    exact_blocks, exact_summaries = _exact_section(groups)
    blocks += exact_blocks
    against_blocks, exact_vs_beam = exact_against_beam(groups, bootstrap_metric, n_resamples, vectors)
    blocks += against_blocks if exact_blocks else []
    boot_blocks, boot = bootstrap_section(groups, bootstrap_metric, n_resamples, vectors)
    blocks += boot_blocks
    diag_blocks, diag_summaries = _diagnosis_section(groups, colors)
    blocks += diag_blocks
    blocks += _loss_section(groups, colors)
    blocks += _runs_section(groups)

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    figure_files = {}
    for block in blocks:
        if block[0] == "figure":
            fig: FigureBlock = block[1]
            figure_files[fig.name] = f"report_{fig.name}.png"
            with atomic_open(out / figure_files[fig.name], "wb") as f:
                f.write(fig.png)
    html_path, md_path = out / "report.html", out / "report.md"
    with atomic_open(html_path, "w", encoding="utf-8") as f:
        f.write(render_html(title, blocks))
    with atomic_open(md_path, "w", encoding="utf-8") as f:
        f.write(render_markdown(title, blocks, figure_files))
    baselines = baseline_methods(groups)
    write_json(out / "summary.json", {
        "methods": {m: {"kind": "baseline" if m in baselines else "llm", "seeds": [r.seed for r in rs],
                        "runs": [r.name for r in rs], "metrics": summaries[m], "diagnosis": diag_summaries.get(m),
                        "diagnosis_totals": diagnosis_totals(rs), "metrics_exact": exact_summaries.get(m),
                        "exact_seeds": [r.seed for r in rs if r.metrics_exact is not None],
                        "minutes_per_epoch": timing[m][0], "fit_minutes": timing[m][1]}
                    for m, rs in groups.items()},
        "paired_bootstrap": boot, "headline_bootstrap": headline_boot, "exact_vs_beam": exact_vs_beam,
        "what_this_shows": shows})
    return html_path, md_path


def results_markdown(summary: dict, *, title: str | None = None) -> str:
    """The compact results table, the "what this shows" sentences and the pairwise bootstrap, from a summary.json dict.

    For scripts and `bearrec experiment` (its results.md); `title` adds a level-2 heading.
    """
    methods = summary.get("methods") if isinstance(summary, dict) else None
    if not isinstance(methods, dict) or not methods:
        raise DataError("the summary has no 'methods'.", fix="pass the dict of a summary.json written by write_report")
    entries = {m: e if isinstance(e, dict) else {} for m, e in methods.items()}
    keys = [k for k in ("hr@1", "hr@5", "hr@10", "ndcg@5", "ndcg@10")
            if any(k in (e.get("metrics") or {}) for e in entries.values())]
    widths = sorted({int(k.split("@")[1]) for e in entries.values() for k in (e.get("diagnosis") or {})
                     if re.fullmatch(r"pruning_rate@\d+", k)})
    b = 10 if 10 in widths else (widths[0] if widths else None)
    with_totals = any(e.get("diagnosis_totals") for e in entries.values())
    with_certified = any("certified_fraction" in (e.get("diagnosis") or {}) for e in entries.values())
    timed = any(e.get("minutes_per_epoch") is not None or e.get("fit_minutes") is not None for e in entries.values())
    top = f"top-{b}" if b is not None else "top-B"
    headers = (["Method", "Seeds"] + [column_name(k) for k in keys] + ([f"PruningRate@{b}"] if b is not None else [])
               + ([f"Pruned / in exact {top}"] if with_totals else []) + (["Certified"] if with_certified else [])
               + (["min/epoch"] if timed else []))
    rows = []
    for method, e in entries.items():
        baseline = e.get("kind") == "baseline"
        diag, totals = e.get("diagnosis") or {}, e.get("diagnosis_totals")
        row = [method, ", ".join(str(s) for s in e.get("seeds", []))]
        row += [format_stat((e.get("metrics") or {}).get(k), k) for k in keys]
        if b is not None:
            row.append("n/a" if baseline else format_stat(diag.get(f"pruning_rate@{b}")))
        if with_totals:
            row.append("n/a" if baseline else "–" if not totals
                       else f"{totals['n_pruned']} / {totals['n_in_exact_top_b']}")
        if with_certified:
            row.append("n/a" if baseline else format_stat(diag.get("certified_fraction")))
        if timed:
            row.append(format_minutes(e.get("minutes_per_epoch"), e.get("fit_minutes")))
        rows.append(row)
    lines = ([f"## {title}", ""] if title else []) + md_table(headers, rows) + [""]
    legend = [("Seeds", SEEDS_MEANING)] + [(column_name(k), MEANINGS[k.split("@")[0]].format(k=k.split("@")[1]))
                                            for k in keys]
    if b is not None:
        legend.append((f"PruningRate@{b}", MEANINGS["pruning_rate"].format(k=b)))
    if with_totals:
        legend.append((f"Pruned / in exact {top}", f"positives beam search pruned / positives inside the exact {top}, "
                                                   "summed over seeds"))
    if with_certified:
        legend.append(("Certified", MEANINGS["certified_fraction"]))
    if timed:
        legend.append(("min/epoch", MIN_PER_EPOCH_MEANING))
    any_baseline = any(e.get("kind") == "baseline" for e in entries.values())
    lines += ["Cells: mean ± std over seeds" + ("; n/a: not applicable to a baseline." if any_baseline else "."), ""]
    lines += [f"- **{name}**: {meaning}" for name, meaning in legend] + [""]
    exact = {m: e["metrics_exact"] for m, e in entries.items() if e.get("metrics_exact")}
    if exact:  # the same rows decoded by exact search, and its paired difference with beam search
        against = {r["method"]: r for r in summary.get("exact_vs_beam") or []}
        metric = next(iter(against.values()))["metric"] if against else None
        lines += ["**Exact top-K search** (the same rows" + (f"; exact − beam: paired bootstrap of per-row "
                  f"{column_name(metric)}, 95% CI" if metric else "") + "):", ""]
        lines += md_table(["Method", "Seeds"] + [column_name(k) for k in keys] + ["Certified"]
                           + (["Exact − beam"] if against else []),
                           [[m, ", ".join(str(s) for s in entries[m].get("exact_seeds", entries[m].get("seeds", [])))]
                            + [format_stat(x.get(k), k) for k in keys] + [format_stat(x.get("certified_share"))]
                            + ([f"{against[m]['mean_diff']:+.4f} {format_interval(against[m])}"
                                if m in against else "–"] if against else []) for m, x in exact.items()]) + [""]
    shows = summary.get("what_this_shows") or []
    if shows:
        lines += ["**What this shows**", ""] + [f"- {s}" for s in shows] + [""]
    boot = summary.get("paired_bootstrap") or []
    if boot:
        lines += ["**Paired bootstrap** (per-row difference a − b averaged over the seeds both have; 95% CI, "
                  "two-sided p):", ""]
        lines += [f"- {r['comparison'].replace(' - ', ' − ')} {r['metric']}: {r['mean_diff']:+.4f} "
                  f"{format_interval(r)}, p {format_p_value(r['p_value'], '= ')}, {r['n_rows']} rows, "
                  f"seeds {list(r['seeds'])}" for r in boot] + [""]
    return "\n".join(lines)


def _version() -> str:
    from .. import __version__

    return __version__
