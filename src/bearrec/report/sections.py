"""The report's sections as blocks: the metrics tables, exact search, pruning diagnosis, losses and the runs."""
from __future__ import annotations

import json
import re

from .bootstrap import summarize_seeds
from .columns import (MIN_PER_EPOCH_MEANING, MODE_TRAINING_MEANING, SEEDS_MEANING, column_name, cutoff_key,
                      format_minutes, format_stat, headline_columns, legend)
from .figures import plot_histogram, plot_losses, plot_metrics, plot_pruning
from .render import FigureBlock, table_block
from .runs import RunResult, baseline_methods

# Settings that legitimately differ between runs of one method.
_RUN_SPECIFIC = re.compile(r"^(seed|objective|method|kind|run_name|output_dir|run_dir)$|_(dir|path)$")


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True)


def runs_section(groups: dict[str, list[RunResult]]) -> list[tuple]:
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


def metrics_section(groups, summaries, colors, timing) -> list[tuple]:
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
    modes = any(r.search != "beam" for rs in groups.values() for r in rs)
    blocks.append(legend(main, [("Seeds", SEEDS_MEANING)]
                         + ([("min/epoch", MIN_PER_EPOCH_MEANING + (MODE_TRAINING_MEANING if modes else ""))]
                            if timed else [])))
    if other:
        blocks.append(("p", "Other test metrics (mean ± std over seeds):"))
        blocks.append(table_block(["Method"] + [column_name(k) for k in other],
                                  [[m] + [format_stat(summaries[m].get(k), k) for k in other] for m in groups]))
        blocks.append(legend(other))
    if main:
        blocks.append(("figure", FigureBlock("metrics", plot_metrics(summaries, main, colors),
                                              "Test metrics per method (error bars: std over seeds)")))
    return blocks


def exact_section(groups) -> tuple[list[tuple], dict[str, dict]]:
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
    missing = [r.name for rs in groups.values() for r in rs
               if r.metrics_exact is None and not r.is_baseline and r.search == "beam"]
    baselines = [m for m in baseline_methods(groups) if m not in have]
    left_out = ([f"runs without metrics-exact.json ({', '.join(missing)})"] if missing else []) + (
        [f"the baselines {', '.join(baselines)} (n/a: they score the whole catalog)"] if baselines else [])
    if left_out:
        blocks.append(("note", "Left out of this table: " + "; ".join(left_out) + "."))
    return blocks, summaries


def loss_section(groups, colors) -> list[tuple]:
    """The loss curves of the language models; baselines, which log none, are named."""
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


def diagnosis_section(groups, colors) -> tuple[list[tuple], dict]:
    """PruningRate@B table and plots from diagnosis.json, where present; baselines shown as n/a."""
    blocks: list[tuple] = [("h2", "Beam-search pruning diagnosis")]
    baselines = baseline_methods(groups)
    llm = {m: rs for m, rs in groups.items() if m not in baselines}
    with_diag = {m: [r for r in rs if r.diagnosis is not None] for m, rs in llm.items()}
    without = [r.name for rs in llm.values() for r in rs if r.diagnosis is None and r.search == "beam"]
    modes_without = [r.name for rs in llm.values() for r in rs if r.diagnosis is None and r.search != "beam"]
    with_diag = {m: rs for m, rs in with_diag.items() if rs}
    if baselines:
        blocks.append(("p", f"n/a for the baselines {', '.join(baselines)}: they do not decode with beam search, "
                            "so nothing is pruned."))
    if without:
        blocks.append(("note", f"No diagnosis file in {', '.join(without)}: left out of this section."))
    if modes_without:
        blocks.append(("note", f"No predictions of their own and of exact search to compute the PruningRate of "
                               f"{', '.join(modes_without)}: left out of this section."))
    if not with_diag:
        return blocks, {}
    used = [f"{r.name}: {r.diagnosis_path.name} ({r.diagnosis.get('n_rows', '?')} rows)"
            for rs in with_diag.values() for r in rs if r.diagnosis_path is not None]
    used += [f"{r.name}: its {r.predictions_path.name} against {r.exact_predictions_path.name} "
             f"({r.diagnosis.get('n_rows', '?')} rows)" for rs in with_diag.values() for r in rs if r.search != "beam"]
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
