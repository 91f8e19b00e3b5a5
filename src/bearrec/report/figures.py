"""The report's plots as PNG bytes, drawn with matplotlib's object API (no pyplot, no global state)."""
from __future__ import annotations

import io
import math
from typing import Iterable

import numpy as np

from .columns import column_name, is_number
from .runs import RunResult


def method_colors(methods: Iterable[str]) -> dict[str, str]:
    """One colour per method, in the given order, the same in every plot."""
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
               "#bcbd22", "#17becf"]
    return {m: palette[i % len(palette)] for i, m in enumerate(methods)}


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _new_figure(width: float = 9.0, height: float = 4.0, ncols: int = 1):
    from matplotlib.figure import Figure  # here, not at the top: `import bearrec.report` stays free of matplotlib

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


def plot_metrics(summaries: dict[str, dict], keys: list[str], colors: dict[str, str]) -> bytes:
    """Bars of each metric's mean per method, std over seeds as error bars."""
    fig, (ax,) = _new_figure(max(6.0, 1.1 * len(keys) + 2))
    series = {m: ([s[k]["mean"] if k in s else 0.0 for k in keys], [s[k]["std"] if k in s else 0.0 for k in keys])
              for m, s in summaries.items()}
    _grouped_bars(ax, [column_name(k) for k in keys], series, colors)
    ax.set_ylabel("mean over seeds (± std)")
    ax.set_title("Test metrics per method")
    return _png(fig)


def plot_losses(groups: dict[str, list[RunResult]], colors: dict[str, str]) -> bytes | None:
    """Training and validation loss per logged step, one line per run; None when no run logged either."""
    fig, (ax_train, ax_eval) = _new_figure(11, 4, ncols=2)
    drawn = {"loss": False, "eval_loss": False}
    for method, runs in groups.items():
        for j, run in enumerate(runs):
            for ax, key in ((ax_train, "loss"), (ax_eval, "eval_loss")):
                pts = [(e.get("step", i), e[key]) for i, e in enumerate(run.log_history)
                       if isinstance(e, dict) and is_number(e.get(key))]
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


def plot_pruning(summaries: dict[str, dict], key: str, colors: dict[str, str]) -> bytes:
    """One bar per method of a PruningRate key, std over seeds as error bars."""
    fig, (ax,) = _new_figure(max(5.0, 1.2 * len(summaries) + 2))
    methods = list(summaries)
    means = [summaries[m][key]["mean"] for m in methods]
    stds = [0.0 if math.isnan(summaries[m][key]["std"]) else summaries[m][key]["std"] for m in methods]
    ax.bar(methods, means, yerr=stds, capsize=4, color=[colors[m] for m in methods])
    ax.set_ylabel(f"{column_name(key)} (mean ± std over seeds)")
    ax.set_ylim(0, max(1.0, max(means) * 1.1))
    ax.set_title("Share of exact top-B positives that beam search prunes (lower is better)")
    return _png(fig)


def _bucket_order(bucket: str) -> tuple:
    return (0, int(bucket), bucket) if bucket.isdigit() else (1, 0, bucket)


def plot_histogram(hists: dict[str, dict[str, float]], colors: dict[str, str], xlabel: str, title: str) -> bytes:
    """Each method's histogram (counts summed over seeds) as shares, buckets side by side."""
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
