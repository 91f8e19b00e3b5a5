"""stats.json: the counts a user checks before training, including every row or item preprocessing dropped.

Every format writes "untitled_items": {"policy": "keep"|"drop", "found": items read without a usable title,
"kept": how many of them are in the catalog under a stand-in title, "by_reason": found by titles' reason};
under "drop" they are also counted in "dropped" (items_<reason> and the rows or interactions they took
along). save_dataset adds "fingerprint" (see dataset.py).
"""
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
    note_unseen_targets(stats, splits)
    return stats


def unseen_targets(splits: Mapping[str, list[Interaction]]) -> dict[str, dict]:
    """Per evaluation split, the rows whose target the training split never shows (as a target or in a history):
    a model learns nothing about those items but their titles, and popularity cannot rank them."""
    seen = {item for row in splits["train"] for item in (*row.history, row.target)}
    out = {}
    for name in ("valid", "test"):
        rows = splits[name]
        unseen = sum(row.target not in seen for row in rows)
        out[name] = {"rows": unseen, "share": round(unseen / len(rows), 4) if rows else 0.0}
    return out


def note_unseen_targets(stats: dict, splits: Mapping[str, list[Interaction]]) -> None:
    """Record `unseen_targets` in `stats`, with a note when most of an evaluation split's targets are unseen."""
    stats["unseen_targets"] = unseen = unseen_targets(splits)
    notes = [n for n in stats.get("notes", []) if not n.startswith(UNSEEN_NOTE)]
    for name, counts in unseen.items():
        if counts["share"] > UNSEEN_NOTE_SHARE:
            notes.append(f"{UNSEEN_NOTE} {counts['rows']} of the {len(splits[name])} {name} rows "
                         f"({counts['share']:.0%}) name a target the training split never shows: those items are "
                         "cold-start (known by their titles only), and popularity cannot rank them")
    if notes or "notes" in stats:
        stats["notes"] = notes


UNSEEN_NOTE = "unseen targets:"
UNSEEN_NOTE_SHARE = 0.5  # past this share of a split's targets unseen in training, stats.json says so in its notes


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
    untitled = stats.get("untitled_items")
    if untitled and untitled.get("found"):
        reasons = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in untitled.get("by_reason", {}).items())
        fate = (f"{untitled['kept']:,} kept under stand-in titles (see notes)" if untitled.get("policy") == "keep"
                else "dropped with their rows (see dropped)")
        lines.append(f"untitled items {untitled['found']:,} ({reasons}): {fate}")
    dropped = {k: v for k, v in stats.get("dropped", {}).items() if v}
    lines.append("dropped: " + (", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in dropped.items())
                                if dropped else "nothing"))
    for note in stats.get("notes", []):
        lines.append(f"note: {note}")
    if stats.get("fingerprint"):
        lines.append(f"fingerprint {stats['fingerprint']}")
    return "\n".join(lines)
