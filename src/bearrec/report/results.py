"""The compact Markdown of a report's summary.json: what `bearrec experiment` writes as results.md."""
from __future__ import annotations

import re

from ..errors import DataError
from .columns import (EPOCH_COST_MEANING, MEANINGS, MIN_PER_EPOCH_MEANING, MODE_TRAINING_MEANING, SEEDS_MEANING,
                      column_name, format_interval, format_minutes, format_p_value, format_stat)
from .environment import environment_note
from .render import md_table


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
    costed = any(e.get("epoch_cost_vs_sft") is not None for e in entries.values())
    modes = any(e.get("search") for e in entries.values())  # rows of another decoding mode than beam search
    top = f"top-{b}" if b is not None else "top-B"
    headers = (["Method", "Seeds"] + [column_name(k) for k in keys] + ([f"PruningRate@{b}"] if b is not None else [])
               + ([f"Pruned / in exact {top}"] if with_totals else []) + (["Certified"] if with_certified else [])
               + (["min/epoch"] if timed else []) + (["Epoch ÷ SFT"] if costed else []))
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
        if costed:
            cost = e.get("epoch_cost_vs_sft")
            row.append("n/a" if baseline else "–" if cost is None else f"{cost:.2f}×")
        rows.append(row)
    lines = ([f"## {title}", ""] if title else []) + md_table(headers, rows) + [""]
    legend = [("Seeds", SEEDS_MEANING)] + [(column_name(k), MEANINGS[k.split("@")[0]].format(k=k.split("@")[1]))
                                            for k in keys]
    if b is not None:
        legend.append((f"PruningRate@{b}", MEANINGS["pruning_rate"].format(k=b) + (
            f"; a decoding mode's row (METHOD · MODE): the share its own top-{b} misses, from its predictions"
            if modes else "")))
    if with_totals:
        searcher = "beam search (a decoding mode's row: that mode)" if modes else "beam search"
        legend.append((f"Pruned / in exact {top}", f"positives {searcher} pruned / positives inside the exact {top}, "
                                                   "summed over seeds"))
    if with_certified:
        legend.append(("Certified", MEANINGS["certified_fraction"]))
    if timed:
        legend.append(("min/epoch", MIN_PER_EPOCH_MEANING + (MODE_TRAINING_MEANING if modes else "")))
    if costed:
        legend.append(("Epoch ÷ SFT", EPOCH_COST_MEANING + (MODE_TRAINING_MEANING if modes else "")))
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
    note = environment_note(summary.get("environment_differences") or {})
    if note:
        lines += [f"**{note}**", ""]
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
