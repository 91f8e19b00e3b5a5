"""Comparison report over training/evaluation runs: one self-contained HTML page and a Markdown twin.

Run-directory contract (one directory per trained model and seed; all JSON):
  config.json        required  {"objective": "sft"|"msl"|"bear"|"direct"|..., "seed": int,
                                "model": str, "dataset": str, ...any other settings}
  metrics.json       required  the dict returned by bearrec.metrics.evaluate_predictions
                               (test split): {"hr@10": float, "ndcg@10": float, ...}
  log_history.json   required  the HF Trainer `state.log_history` list: dicts with "step",
                               "epoch" and "loss" (training) or "eval_loss" (validation);
                               `[]` for a run that was not trained (e.g. a zero-shot base model)
  diagnosis.json     optional  {"pruning_rate@B": float, "certified_fraction": float,
                                "n_in_exact_top_b": int, "pruned_token_outside_top_b_share": float,
                                "pruned_step_histogram": {"1": n, "2": n, ...},
                                "positive_token_rank_histogram": {"1": n, ..., "B": n, ">B": n}}
                               (a diagnosis of the first N rows, diagnosis-firstN.json, stands in when
                               there is none of the whole split; the report says which file it used)
  predictions.jsonl  optional  the decoder's predictions on the same split as metrics.json;
                               used for the paired bootstrap of BEAR against each other method
A missing optional file drops the matching plot or section with a note in the report; a
missing or malformed required file raises DataError naming the file and the fix. File names are
`RunDir`'s (bearrec.run_dir).

Runs are grouped into methods by config["method"] (else config["objective"]); numbers are mean ± std
(ddof=1) over the runs (seeds) of each method. Runs of different datasets (by the fingerprint `bearrec
train` records, else the dataset path) are refused: averaging them would mix datasets.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
import re
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .errors import BearrecError, ConfigError, DataError
from .io import atomic_open, read_json_file, read_jsonl, write_json
from .metrics import per_row_metrics
from .run_dir import RunDir
from .stats import paired_bootstrap, summarize_seeds

REQUIRED_FILES = ("config.json", "metrics.json", "log_history.json")
METHOD_ORDER = ("sft", "msl", "msl+ce", "direct", "direct+ce", "direct-sft", "bear", "bear+ce", "bear-sft")
REFERENCE_METHOD = "bear"
# Settings that legitimately differ between runs of one method.
_RUN_SPECIFIC = re.compile(r"^(seed|objective|run_name|output_dir|run_dir)$|_(dir|path)$")


@dataclass
class RunResult:
    """Everything the report reads from one run directory."""

    config: dict
    metrics: dict
    log_history: list
    diagnosis: dict | None = None
    predictions_path: Path | None = None
    run_dir: Path | None = None
    diagnosis_path: Path | None = None

    @property
    def dataset(self) -> str:
        """What the run was evaluated on: the dataset's fingerprint where recorded, else its path."""
        return str(self.config.get("dataset_fingerprint") or self.config.get("dataset_path")
                   or self.config.get("dataset", ""))

    @property
    def method(self) -> str:
        if "method" in self.config:  # `bearrec train`: the objective with its base, e.g. "bear-sft"
            return str(self.config["method"])
        objective = self.config["objective"]
        return str(objective["name"] if isinstance(objective, dict) else objective)

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    @property
    def name(self) -> str:
        return self.run_dir.name if self.run_dir is not None else f"{self.method}-seed{self.seed}"


def load_run(run_dir: str | Path) -> RunResult:
    """Read one run directory (see the module docstring for its files) through `RunDir`."""
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise BearrecError(f"{run.path}: not a run directory. Fix: pass directories written by training/evaluation.")
    config = read_json_file(run.config_path, dict, 'write the run settings, at least {"objective": ..., "seed": ...}')
    for key in ("objective", "seed"):
        if key not in config:
            raise DataError(f"lacks {key!r}.", path=run.config_path,
                            fix='config.json needs {"objective": str, "seed": int, ...}')
    if not isinstance(config["seed"], int) or isinstance(config["seed"], bool):
        raise DataError(f"'seed' must be an integer, got {config['seed']!r}.", path=run.config_path)
    metrics = read_json_file(run.artefact("metrics"), dict,
                             "evaluate the run on the test split (`bearrec evaluate RUN_DIR`)")
    history = read_json_file(run.log_history_path, list, "write trainer.state.log_history, or [] for an untrained run")
    best = run.best("diagnosis")
    diagnosis = read_json_file(best[1], dict, "diagnose the run again (`bearrec diagnose RUN_DIR`)") if best else None
    if diagnosis is not None:
        for key in ("pruned_step_histogram", "positive_token_rank_histogram"):
            hist = diagnosis.get(key, {})
            if not isinstance(hist, dict) or not all(_is_number(v) and v >= 0 for v in hist.values()):
                raise DataError(f"{key!r} must map buckets to counts >= 0.", path=best[1])
    preds = run.artefact("predictions")
    return RunResult(config, metrics, history, diagnosis, preds if preds.exists() else None, run.path,
                     best[1] if best else None)


def discover_runs(root: str | Path) -> list[Path]:
    """Every directory under `root` (itself included) that holds config.json and metrics.json, sorted."""
    root = Path(root)
    return sorted(p.parent for p in root.rglob("config.json") if (p.parent / "metrics.json").exists())


def _is_number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _group(runs: Sequence[RunResult]) -> dict[str, list[RunResult]]:
    """Runs by method, known methods first in METHOD_ORDER, then the others alphabetically; seeds sorted."""
    groups: dict[str, list[RunResult]] = {}
    for run in runs:
        groups.setdefault(run.method, []).append(run)
    order = sorted(groups, key=lambda m: (METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER), m))
    return {m: sorted(groups[m], key=lambda r: r.seed) for m in order}


def _cutoff_key(key: str) -> tuple:
    """Sort metric keys by family then cut-off: hr@1, hr@5, ..., ndcg@1, ..."""
    name, _, k = key.partition("@")
    return (name, int(k) if k.isdigit() else math.inf, key)


def _fmt(stat: dict | None, key: str = "") -> str:
    """'mean ± std' (std left out for a single seed); counts (n_*) and large values with fewer digits."""
    if stat is None:
        return "–"
    mean, std = stat["mean"], stat["std"]
    if key.startswith("n_") and float(mean).is_integer() and (math.isnan(std) or std == 0):
        return str(int(mean))
    digits = 1 if key.startswith("n_") or abs(mean) >= 100 else 4
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True)


# ---------------------------------------------------------------- blocks rendered to HTML and Markdown

@dataclass
class _Figure:
    name: str
    png: bytes
    caption: str


def _table(headers: list[str], rows: list[list[str]]) -> tuple:
    return ("table", headers, rows)


def _render_html(title: str, blocks: list[tuple]) -> str:
    parts = []
    for block in blocks:
        kind = block[0]
        if kind == "h2":
            parts.append(f"<h2>{html.escape(block[1])}</h2>")
        elif kind == "p":
            parts.append(f"<p>{html.escape(block[1])}</p>")
        elif kind == "note":
            parts.append(f'<p class="note">{html.escape(block[1])}</p>')
        elif kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block[1])
            body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in block[2])
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "figure":
            fig: _Figure = block[1]
            data = base64.b64encode(fig.png).decode("ascii")
            parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(fig.caption)}">'
                         f"<figcaption>{html.escape(fig.caption)}</figcaption></figure>")
    return _HTML_TEMPLATE.format(title=html.escape(title), body="\n".join(parts))


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _render_markdown(title: str, blocks: list[tuple], figure_files: dict[str, str]) -> str:
    lines = [f"# {title}", ""]
    for block in blocks:
        kind = block[0]
        if kind == "h2":
            lines += [f"## {block[1]}", ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "note":
            lines += [f"> {block[1]}", ""]
        elif kind == "table":
            lines.append("| " + " | ".join(_md_cell(h) for h in block[1]) + " |")
            lines.append("|" + "---|" * len(block[1]))
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block[2]]
            lines.append("")
        elif kind == "figure":
            fig: _Figure = block[1]
            lines += [f"![{fig.caption}]({figure_files[fig.name]})", "", f"*{fig.caption}*", ""]
    return "\n".join(lines)


_HTML_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }}
th {{ background: #f0f0f0; }}
tbody tr:nth-child(even) {{ background: #fafafa; }}
figure {{ margin: 1em 0 2em; }}
img {{ max-width: 100%; height: auto; border: 1px solid #eee; }}
figcaption {{ color: #555; font-size: 0.9em; }}
.note {{ color: #8a5a00; background: #fff8e6; border-left: 3px solid #e0a800; padding: 0.3em 0.8em; }}
</style>
</head>
<body>
<h1>{title}</h1>
{body}
<script>
(function () {{
  function check() {{
    var imgs = Array.prototype.slice.call(document.images);
    var ok = imgs.filter(function (i) {{ return i.complete && i.naturalWidth > 0; }}).length;
    document.body.setAttribute("data-images-loaded", ok + "/" + imgs.length);
  }}
  if (document.readyState === "complete") {{ check(); }} else {{ window.addEventListener("load", check); }}
}})();
</script>
</body>
</html>
"""


# ---------------------------------------------------------------- plots

def _colors(methods: Iterable[str]) -> dict[str, str]:
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    return {m: palette[i % len(palette)] for i, m in enumerate(methods)}


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _new_figure(width: float = 9.0, height: float = 4.0, ncols: int = 1):
    from matplotlib.figure import Figure  # no pyplot: no global state, Agg canvas for savefig

    fig = Figure(figsize=(width, height))
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    for ax in axes:
        ax.grid(axis="y", alpha=0.3)
    return fig, axes


def _grouped_bars(ax, labels: list[str], series: dict[str, tuple[list[float], list[float] | None]],
                  colors: dict[str, str]) -> None:
    """One group of bars per label, one bar per method, optional error bars."""
    x = np.arange(len(labels))
    width = 0.8 / max(1, len(series))
    for i, (method, (values, errors)) in enumerate(series.items()):
        yerr = None if errors is None else [0.0 if math.isnan(e) else e for e in errors]
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, yerr=yerr, capsize=3,
               label=method, color=colors[method])
    ax.set_xticks(x, labels)
    ax.legend(fontsize=8)


def _plot_metrics(summaries: dict[str, dict], keys: list[str], colors: dict[str, str]) -> bytes:
    fig, (ax,) = _new_figure(max(6.0, 1.1 * len(keys) + 2))
    series = {m: ([s[k]["mean"] if k in s else 0.0 for k in keys], [s[k]["std"] if k in s else 0.0 for k in keys])
              for m, s in summaries.items()}
    _grouped_bars(ax, keys, series, colors)
    ax.set_ylabel("mean over seeds (± std)")
    ax.set_title("Test metrics per method")
    return _png(fig)


def _plot_losses(groups: dict[str, list[RunResult]], colors: dict[str, str]) -> bytes | None:
    fig, (ax_train, ax_eval) = _new_figure(11, 4, ncols=2)
    drawn = {"loss": False, "eval_loss": False}
    for method, runs in groups.items():
        for j, run in enumerate(runs):
            for ax, key in ((ax_train, "loss"), (ax_eval, "eval_loss")):
                pts = [(e.get("step", i), e[key]) for i, e in enumerate(run.log_history)
                       if isinstance(e, dict) and _is_number(e.get(key))]
                if pts:
                    xs, ys = zip(*pts)
                    ax.plot(xs, ys, color=colors[method], alpha=0.85, marker="o" if key == "eval_loss" else None,
                            markersize=3, linewidth=1.2, label=method if j == 0 else None)
                    drawn[key] = True
    if not any(drawn.values()):
        return None
    for ax, key, title in ((ax_train, "loss", "Training loss"), (ax_eval, "eval_loss", "Validation loss")):
        ax.set_title(title)
        ax.set_xlabel("step")
        if drawn[key]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    return _png(fig)


def _plot_pruning(summaries: dict[str, dict], key: str, colors: dict[str, str]) -> bytes:
    fig, (ax,) = _new_figure(max(5.0, 1.2 * len(summaries) + 2))
    methods = list(summaries)
    means = [summaries[m][key]["mean"] for m in methods]
    stds = [0.0 if math.isnan(summaries[m][key]["std"]) else summaries[m][key]["std"] for m in methods]
    ax.bar(methods, means, yerr=stds, capsize=4, color=[colors[m] for m in methods])
    ax.set_ylabel(f"{key} (mean ± std over seeds)")
    ax.set_ylim(0, max(1.0, max(means) * 1.1))
    ax.set_title("Share of exact top-B positives that beam search prunes (lower is better)")
    return _png(fig)


def _bucket_order(bucket: str) -> tuple:
    return (0, int(bucket), bucket) if bucket.isdigit() else (1, 0, bucket)


def _plot_histogram(hists: dict[str, dict[str, float]], colors: dict[str, str], xlabel: str, title: str) -> bytes:
    buckets = sorted({b for h in hists.values() for b in h}, key=_bucket_order)
    series = {}
    for method, hist in hists.items():
        total = sum(hist.values())
        series[method] = ([hist.get(b, 0) / total if total else 0.0 for b in buckets], None)
    fig, (ax,) = _new_figure(max(6.0, 0.5 * len(buckets) * max(1, len(hists)) + 2))
    _grouped_bars(ax, buckets, series, colors)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share (counts summed over seeds)")
    ax.set_title(title)
    return _png(fig)


# ---------------------------------------------------------------- sections

def _runs_section(groups: dict[str, list[RunResult]]) -> list[tuple]:
    """Which runs, seeds and settings produced the numbers, plus warnings about mixed settings."""
    runs = [r for rs in groups.values() for r in rs]
    keys = sorted({k for r in runs for k in r.config if not _RUN_SPECIFIC.search(k)})
    varying = [k for k in keys if len({_canonical(r.config.get(k)) for r in runs}) > 1]
    shown = [k for k in varying if k not in ("model", "dataset")]
    headers = ["method", "seed", "run", "model", "dataset"] + (["settings that vary between runs"] if shown else [])
    rows = [[r.method, str(r.seed), r.name, str(r.config.get("model", "–")), str(r.config.get("dataset", "–"))]
            + ([", ".join(f"{k}={_canonical(r.config.get(k))}" for k in shown)] if shown else []) for r in runs]
    blocks = [("h2", "Runs"), _table(headers, rows)]
    for method, rs in groups.items():
        mixed = [k for k in keys if len({_canonical(r.config.get(k)) for r in rs}) > 1]
        if mixed:
            blocks.append(("note", f"The runs of {method} differ in {', '.join(mixed)}: "
                                   "its mean ± std mixes configurations, not only seeds."))
        seeds = [r.seed for r in rs]
        if len(set(seeds)) < len(seeds):
            blocks.append(("note", f"{method} has several runs with the same seed: {seeds}."))
    for key in ("model", "dataset"):
        if key in varying:
            blocks.append(("note", f"The runs do not all share the same {key}; compare methods with care."))
    return blocks


def _metrics_section(groups, summaries, colors) -> list[tuple]:
    """The comparison table (HR/NDCG), the secondary metrics table and the metrics plot."""
    all_keys = sorted({k for s in summaries.values() for k in s}, key=_cutoff_key)
    main = [k for k in all_keys if k.split("@")[0] in ("hr", "ndcg")]
    other = [k for k in all_keys if k not in main]
    blocks: list[tuple] = [("h2", "Comparison (test split)"),
                           ("p", "Mean ± sample std over the seeds of each method; exact item match, "
                                 "K up to the beam size.")]
    seeds = {m: ", ".join(str(r.seed) for r in rs) for m, rs in groups.items()}
    blocks.append(_table(["method", "seeds"] + main,
                         [[m, seeds[m]] + [_fmt(summaries[m].get(k), k) for k in main] for m in groups]))
    if other:
        blocks.append(_table(["method"] + other, [[m] + [_fmt(summaries[m].get(k), k) for k in other] for m in groups]))
    if main:
        blocks.append(("figure", _Figure("metrics", _plot_metrics(summaries, main, colors),
                                         "Test metrics per method (error bars: std over seeds)")))
    return blocks


def _loss_section(groups, colors) -> list[tuple]:
    blocks: list[tuple] = [("h2", "Training and validation loss")]
    png = _plot_losses(groups, colors)
    if png is None:
        return blocks + [("note", "No run logged a training or validation loss (log_history.json is empty).")]
    return blocks + [("figure", _Figure("losses", png, "Loss per logged step; one line per run (seed)"))]


def _diagnosis_section(groups, colors) -> tuple[list[tuple], dict]:
    """PruningRate@B table and plots from diagnosis.json, where present."""
    blocks: list[tuple] = [("h2", "Beam-search pruning diagnosis")]
    with_diag = {m: [r for r in rs if r.diagnosis is not None] for m, rs in groups.items()}
    without = [r.name for rs in groups.values() for r in rs if r.diagnosis is None]
    with_diag = {m: rs for m, rs in with_diag.items() if rs}
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
    keys = sorted({k for s in summaries.values() for k in s}, key=_cutoff_key)
    blocks.append(_table(["method", "seeds"] + keys,
                         [[m, ", ".join(str(r.seed) for r in with_diag[m])] + [_fmt(summaries[m].get(k), k) for k in keys]
                          for m in with_diag]))
    for key in [k for k in keys if k.startswith("pruning_rate@")]:
        have = {m: s for m, s in summaries.items() if key in s}
        blocks.append(("figure", _Figure(key.replace("@", "_at_"), _plot_pruning(have, key, colors),
                                         f"PruningRate@{key.split('@')[1]} per method (mean ± std over seeds)")))
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
            blocks.append(("figure", _Figure(name, _plot_histogram(hists, colors, xlabel, caption), caption)))
        else:
            blocks.append(("note", f"No run reports {field}: plot left out."))
    return blocks, summaries


def _row_vectors(run: RunResult, metric: str) -> tuple[list, np.ndarray]:
    """Row keys (index, target) and the per-row metric of a run's predictions."""
    rows = list(read_jsonl(run.predictions_path))
    k = int(metric.split("@")[1])
    vecs = per_row_metrics(rows, ks=(k,))
    if metric not in vecs:
        raise DataError(f"{metric} is not defined: recommendation lists are shorter than {k}.",
                        path=run.predictions_path)
    keys = [(r.get("index", i), str(r.get("target"))) for i, r in enumerate(rows)]
    return keys, vecs[metric]


def _bootstrap_section(groups, metric: str, n_resamples: int) -> tuple[list[tuple], list[dict]]:
    """Paired bootstrap of BEAR minus each other method on per-row `metric`, averaged over shared seeds."""
    blocks: list[tuple] = [("h2", f"Paired bootstrap: {REFERENCE_METHOD} vs the other methods ({metric})")]
    if REFERENCE_METHOD not in groups or len(groups) < 2:
        return blocks + [("note", f"Needs {REFERENCE_METHOD} runs and at least one other method.")], []
    ref = {r.seed: r for r in groups[REFERENCE_METHOD] if r.predictions_path is not None}
    rows, results = [], []
    cache: dict[Path, tuple[list, np.ndarray]] = {}

    def vectors(run: RunResult) -> tuple[list, np.ndarray]:
        if run.predictions_path not in cache:
            cache[run.predictions_path] = _row_vectors(run, metric)
        return cache[run.predictions_path]

    for method, runs in groups.items():
        if method == REFERENCE_METHOD:
            continue
        other = {r.seed: r for r in runs if r.predictions_path is not None}
        seeds = sorted(set(ref) & set(other))
        if not seeds:
            blocks.append(("note", f"{method}: no seed with predictions.jsonl in both methods; comparison left out."))
            continue
        try:
            pairs = [(vectors(other[s]), vectors(ref[s])) for s in seeds]
        except DataError as e:
            blocks.append(("note", f"{method}: comparison left out: {e}"))
            continue
        keys = pairs[0][0][0]
        if any(a[0] != keys or b[0] != keys for a, b in pairs):
            blocks.append(("note", f"{method}: predictions cover different rows (index/target) than "
                                   f"{REFERENCE_METHOD}'s; comparison left out."))
            continue
        a = np.mean([a[1] for a, _ in pairs], axis=0)
        b = np.mean([b[1] for _, b in pairs], axis=0)
        res = paired_bootstrap(a, b, n_resamples=n_resamples)
        results.append({"comparison": f"{REFERENCE_METHOD} - {method}", "metric": metric, "seeds": seeds, **res})
        rows.append([f"{REFERENCE_METHOD} − {method}", ", ".join(map(str, seeds)), str(res["n_rows"]),
                     f"{res['mean_diff']:+.4f}", f"[{res['low']:+.4f}, {res['high']:+.4f}]", f"{res['p_value']:.4f}"])
    if rows:
        blocks.insert(1, ("p", f"Per-row {metric} averaged over the seeds both methods have, then rows resampled "
                               f"with replacement ({n_resamples} resamples); positive = {REFERENCE_METHOD} better."))
        blocks.insert(2, _table(["difference", "seeds", "rows", "mean", "95% CI", "p (two-sided)"], rows))
    return blocks, results


# ---------------------------------------------------------------- entry point

def write_report(runs: Sequence[RunResult | str | Path], output_dir: str | Path, *,
                 title: str = "bearrec: method comparison", bootstrap_metric: str = "ndcg@10",
                 n_resamples: int = 10000) -> tuple[Path, Path]:
    """Write report.html (self-contained) and report.md (+ PNG files) comparing methods over seeds.

    Also writes summary.json (per-method mean/std/n of every metric, diagnosis and bootstrap
    result) beside them, for scripts. Returns (html_path, md_path).
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
    groups = _group(loaded)
    colors = _colors(groups)
    summaries = {m: summarize_seeds([r.metrics for r in rs]) for m, rs in groups.items()}

    blocks: list[tuple] = [("p", f"{len(loaded)} runs, {len(groups)} methods; generated by bearrec "
                                 f"{_version()} on {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC.")]
    blocks += _metrics_section(groups, summaries, colors)
    boot_blocks, boot = _bootstrap_section(groups, bootstrap_metric, n_resamples)
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
            fig: _Figure = block[1]
            figure_files[fig.name] = f"report_{fig.name}.png"
            with atomic_open(out / figure_files[fig.name], "wb") as f:
                f.write(fig.png)
    html_path, md_path = out / "report.html", out / "report.md"
    with atomic_open(html_path, "w", encoding="utf-8") as f:
        f.write(_render_html(title, blocks))
    with atomic_open(md_path, "w", encoding="utf-8") as f:
        f.write(_render_markdown(title, blocks, figure_files))
    write_json(out / "summary.json", {
        "methods": {m: {"seeds": [r.seed for r in rs], "runs": [r.name for r in rs], "metrics": summaries[m],
                        "diagnosis": diag_summaries.get(m)} for m, rs in groups.items()},
        "paired_bootstrap": boot})
    return html_path, md_path


def run_dataset(runs: Sequence[RunResult], key: str) -> str:
    """The dataset path a run with dataset `key` names (for messages)."""
    run = next(r for r in runs if r.dataset == key)
    return str(run.config.get("dataset_path") or run.config.get("dataset") or key)


def _version() -> str:
    from . import __version__

    return __version__
