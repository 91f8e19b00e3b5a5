"""stats.json: the counts a user checks before training, including every row or item preprocessing dropped."""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from typing import Mapping

from .dataset import SPLITS, Interaction


def duplicate_title_counts(items: Mapping[str, str]) -> dict[str, int]:
    """How many titles are shared by several ids, how many ids share them, and how many ids beyond one per title."""
    shared = [n for n in Counter(items.values()).values() if n > 1]
    return {"titles": len(shared), "items": sum(shared), "extra_items": sum(shared) - len(shared)}


def _date(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d")


def compute_stats(items: Mapping[str, str], splits: Mapping[str, list[Interaction]], *,
                  dropped: Mapping[str, int], **extra: object) -> dict:
    """Build the stats.json dict for a catalog and its splits; `extra` adds format-specific facts."""
    lengths = [len(row.history) for name in SPLITS for row in splits[name]]
    users = {row.user_id for name in SPLITS for row in splits[name]}
    stats: dict = {
        "n_items": len(items),
        "n_users": len(users),
        **{f"n_{name}": len(splits[name]) for name in SPLITS},
        "history_length": {
            "min": min(lengths) if lengths else 0,
            "mean": round(sum(lengths) / len(lengths), 3) if lengths else 0.0,
            "max": max(lengths) if lengths else 0,
        },
        "duplicate_titles": duplicate_title_counts(items),
        "period": {name: {"first": _date(min(r.timestamp for r in splits[name])),
                          "last": _date(max(r.timestamp for r in splits[name]))}
                   for name in SPLITS if splits[name]},
        "dropped": dict(dropped),
    }
    stats.update(extra)
    return stats


def format_stats(stats: Mapping) -> str:
    """A short human-readable summary of stats.json for the CLI to print."""
    h = stats["history_length"]
    dup = stats["duplicate_titles"]
    lines = [
        f"items {stats['n_items']:,}  users {stats['n_users']:,}",
        f"rows  train {stats['n_train']:,}  valid {stats['n_valid']:,}  test {stats['n_test']:,}",
        f"history length min {h['min']}  mean {h['mean']}  max {h['max']}",
        f"duplicate titles {dup['titles']} (shared by {dup['items']} item ids)",
    ]
    for name, span in stats.get("period", {}).items():
        lines.append(f"{name:5} period {span['first']} .. {span['last']}")
    dropped = {k: v for k, v in stats.get("dropped", {}).items() if v}
    lines.append("dropped: " + (", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in dropped.items())
                                if dropped else "nothing"))
    for note in stats.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)
