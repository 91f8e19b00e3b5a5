"""Paired comparisons on per-row metrics: every pair of methods, the best against the runner-up ("what this
shows"), and exact search against beam search, each a paired bootstrap over the same rows."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..files import read_jsonl
from ..metrics import per_row_metrics
from .bootstrap import paired_bootstrap
from .columns import HEADLINE_METRICS, column_name, format_interval, format_p_value, format_stat, is_number
from .render import table_block
from .runs import RunResult


class RowVectors:
    """Per-row metric vectors of runs' predictions; each file is read once, each (file, metric) computed once."""

    def __init__(self) -> None:
        self._rows: dict[Path, tuple[list[dict], list]] = {}
        self._vectors: dict[tuple[Path, str], np.ndarray] = {}

    def get(self, run: RunResult, metric: str, search: str = "beam") -> tuple[list, np.ndarray]:
        """Row keys (index, target) and the per-row `metric` of the run's predictions (of `search`)."""
        path = run.predictions_path if search == "beam" else run.exact_predictions_path
        if path not in self._rows:
            rows = list(read_jsonl(path))
            self._rows[path] = (rows, [(r.get("index", i), str(r.get("target"))) for i, r in enumerate(rows)])
        rows, keys = self._rows[path]
        if (path, metric) not in self._vectors:
            k = int(metric.split("@")[1])
            vecs = per_row_metrics(rows, ks=(k,))
            if metric not in vecs:
                raise DataError(f"{metric} is not defined: recommendation lists are shorter than {k}.", path=path)
            self._vectors[path, metric] = vecs[metric]
        return keys, self._vectors[path, metric]


def _compare(groups: dict[str, list[RunResult]], a: str, b: str, metric: str, vectors: RowVectors,
             n_resamples: int) -> dict | str:
    """Paired bootstrap of a − b on per-row `metric` averaged over the seeds both have; else why it cannot be done."""
    runs_a = {r.seed: r for r in groups[a] if r.predictions_path is not None}
    runs_b = {r.seed: r for r in groups[b] if r.predictions_path is not None}
    seeds = sorted(set(runs_a) & set(runs_b))
    if not seeds:
        return "no seed with predictions.jsonl in both methods"
    try:
        va = [vectors.get(runs_a[s], metric) for s in seeds]
        vb = [vectors.get(runs_b[s], metric) for s in seeds]
    except DataError as e:
        return str(e)
    keys = va[0][0]
    if any(v[0] != keys for v in va + vb):
        return "predictions cover different rows (index/target)"
    mean_a = np.mean([v[1] for v in va], axis=0)
    mean_b = np.mean([v[1] for v in vb], axis=0)
    res = paired_bootstrap(mean_b, mean_a, n_resamples=n_resamples)  # its mean_diff is mean(a - b)
    return {"comparison": f"{a} - {b}", "metric": metric, "seeds": seeds, **res,
            "identical_rows": bool(np.array_equal(mean_a, mean_b))}


def _excludes_zero(res: dict) -> bool:
    return res["low"] > 0 or res["high"] < 0


def _bootstrap_cells(res: dict) -> list[str]:
    """Rows, mean difference, 95% CI, p-value and "CI excludes 0" of one paired bootstrap, as table cells."""
    return [str(res["n_rows"]), f"{res['mean_diff']:+.4f}", format_interval(res), format_p_value(res["p_value"]),
            "yes" if _excludes_zero(res) else "no"]


def bootstrap_section(groups, metric: str, n_resamples: int, vectors: RowVectors) -> tuple[list[tuple], list[dict]]:
    """Paired bootstrap of every pair of methods (a before b in report order, a − b) on per-row `metric`."""
    blocks: list[tuple] = [("h2", f"Paired bootstrap between methods ({column_name(metric)})")]
    with_preds = [m for m, rs in groups.items() if any(r.predictions_path is not None for r in rs)]
    without = [m for m in groups if m not in with_preds]
    notes: list[tuple] = []
    if without:
        notes.append(("note", f"No predictions.jsonl in any run of {', '.join(without)}: left out of the paired "
                              "bootstrap."))
    if len(with_preds) < 2:
        notes.append(("note", "The paired bootstrap needs two methods with predictions on the same rows."))
        return blocks + notes, []
    rows, results = [], []
    for i, a in enumerate(with_preds):
        for b in with_preds[i + 1:]:
            res = _compare(groups, a, b, metric, vectors, n_resamples)
            if isinstance(res, str):
                notes.append(("note", f"{a} − {b}: {res}; comparison left out."))
                continue
            results.append(res)
            rows.append([f"{a} − {b}", ", ".join(map(str, res["seeds"]))] + _bootstrap_cells(res))
    if rows:
        blocks.append(("p", f"Every pair of methods, a listed before b: per-row {column_name(metric)} averaged over "
                            f"the seeds both methods have, then rows resampled with replacement ({n_resamples} "
                            "resamples); a positive difference means a is better."))
        blocks.append(table_block(["Difference (a − b)", "Seeds", "Rows", "Mean difference", "95% CI", "p-value",
                                   "CI excludes 0"], rows))
        blocks.append(("legend", [
            ("Difference (a − b)", f"per-row {column_name(metric)} of a minus that of b"),
            ("Seeds", "the seeds both methods have; each row's value is averaged over them"),
            ("Rows", "test rows paired"), ("Mean difference", "mean over rows of a − b"),
            ("95% CI", "percentile bootstrap interval of the mean difference"),
            ("p-value", "two-sided bootstrap p-value for 'no difference'"),
            ("CI excludes 0", "yes: the two methods are separable on these rows at 95%")]))
    return blocks + notes, results


def what_this_shows(groups, summaries, vectors: RowVectors, n_resamples: int) -> tuple[list[str], list[dict]]:
    """Sentences naming, per headline metric, the best method, the runner-up and whether a paired CI separates them."""
    seeds_of = {m: ", ".join(str(r.seed) for r in rs) for m, rs in groups.items()}
    keys = [k for k in HEADLINE_METRICS if any(is_number(s.get(k, {}).get("mean")) for s in summaries.values())]
    if len(groups) == 1:
        method = next(iter(groups))
        values = "; ".join(f"{column_name(k)} {format_stat(summaries[method].get(k), k)}" for k in keys)
        return [f"Only one method, {method} (seeds {seeds_of[method]}), is in this report: there is nothing to "
                f"compare it with" + (f" ({values})." if values else ".")], []
    if not keys:
        return [f"No headline metric ({', '.join(column_name(k) for k in HEADLINE_METRICS)}) in the runs' metrics: "
                "nothing to rank."], []
    sentences, boots = [], []
    for key in keys:
        means = {m: s[key]["mean"] for m, s in summaries.items()
                 if key in s and is_number(s[key].get("mean")) and not math.isnan(s[key]["mean"])}
        ranked = sorted(means, key=lambda m: -means[m])  # stable: ties keep report order
        if len(ranked) < 2:
            sentences.append(f"{column_name(key)}: only {ranked[0]} reports it ({means[ranked[0]]:.4f}).")
            continue
        best, second = ranked[:2]
        text = (f"{column_name(key)}: {best} has the best mean ({means[best]:.4f}), {second} is the runner-up "
                f"({means[second]:.4f}), difference {means[best] - means[second]:+.4f}")
        res = _compare(groups, best, second, key, vectors, n_resamples)
        if isinstance(res, str):
            sentences.append(f"{text}; no paired bootstrap: {res}.")
            continue
        boots.append(res)
        ci = f"the {round(100 * res['confidence'])}% CI {format_interval(res)}"
        one_seed_llms = len(res["seeds"]) == 1 and all(groups[m][0].kind == "llm" for m in (best, second))
        if res["identical_rows"]:
            verdict = "equal on every row: nothing to separate."
        elif _excludes_zero(res) and one_seed_llms:
            verdict = (f"{ci} excludes 0 on these rows, but with one seed this ranks two trained models, not the "
                       "methods: another seed or thread count can reverse it, so one seed decides nothing between them.")
        elif _excludes_zero(res):
            verdict = f"{ci} excludes 0."
        else:
            verdict = f"{ci} includes 0: not separable on these rows."
        sentences.append(f"{text}; paired bootstrap of {best} − {second} over {res['n_rows']} rows and seeds "
                         f"{', '.join(map(str, res['seeds']))}: {verdict}")
    return sentences, boots


def exact_against_beam(groups, metric: str, n_resamples: int, vectors: RowVectors) -> tuple[list[tuple], list[dict]]:
    """Paired bootstrap, per method, of exact search − beam search on per-row `metric` of the same rows (averaged
    over the seeds that have both predictions), so the two search modes are compared with an interval."""
    rows, results, notes = [], [], []
    for method, rs in groups.items():
        both = [r for r in rs if r.search == "beam" and r.predictions_path is not None
                and r.exact_predictions_path is not None]
        if not both:
            continue
        try:
            beam = [vectors.get(r, metric) for r in both]
            exact = [vectors.get(r, metric, search="exact") for r in both]
        except DataError as e:
            notes.append(("note", f"{method}: {e}; left out of the exact − beam comparison."))
            continue
        aligned = []
        for (keys, b), (exact_keys, e) in zip(beam, exact):
            order = {key: i for i, key in enumerate(exact_keys)}
            if sorted(order) != sorted(keys):
                break
            aligned.append((b, e[[order[key] for key in keys]]))
        if len(aligned) < len(both):
            notes.append(("note", f"{method}: its exact and beam predictions cover different rows; left out of the "
                                  "exact − beam comparison."))
            continue
        res = paired_bootstrap(np.mean([b for b, _ in aligned], axis=0), np.mean([e for _, e in aligned], axis=0),
                               n_resamples=n_resamples)  # mean_diff is mean(exact - beam)
        results.append({"method": method, "metric": metric, "seeds": [r.seed for r in both], **res})
        rows.append([method, ", ".join(str(r.seed) for r in both)] + _bootstrap_cells(res))
    if not rows:
        return notes, results
    name = column_name(metric)
    blocks: list[tuple] = [("p", f"Exact search against beam search, per method: per-row {name} of the same rows "
                                 f"(averaged over the seeds with both predictions), rows resampled with replacement "
                                 f"({n_resamples} resamples); a positive difference means exact search does better."),
                           table_block(["Method", "Seeds", "Rows", "Mean difference (exact − beam)", "95% CI",
                                        "p-value", "CI excludes 0"], rows)]
    return blocks + notes, results
