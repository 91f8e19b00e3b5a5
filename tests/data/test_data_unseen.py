"""stats.json counts the evaluation rows whose target the training split never shows, and says so when most are."""
from __future__ import annotations

import json

from bearrec.data.dataset import Dataset, Interaction, save_dataset
from bearrec.data.stats import compute_stats


def _rows(pairs, user="u"):
    return [Interaction(f"{user}{i}", tuple(h), t, i) for i, (h, t) in enumerate(pairs)]


def test_unseen_targets_are_counted_and_noted():
    items = {str(i): f"item {i}" for i in range(8)}
    splits = {"train": _rows([(["0"], "1"), (["1"], "2")]), "valid": _rows([(["2"], "1")], "v"),
              "test": _rows([(["2"], "5"), (["1"], "6"), (["0"], "2")], "t")}
    stats = compute_stats(items, splits, dropped={})
    assert stats["unseen_targets"] == {"valid": {"rows": 0, "share": 0.0}, "test": {"rows": 2, "share": 0.6667}}
    assert any(n.startswith("unseen targets: 2 of the 3 test rows (67%)") for n in stats["notes"])
    seen = compute_stats(items, {**splits, "test": _rows([(["0"], "2")], "t")}, dropped={})
    assert seen["unseen_targets"]["test"]["rows"] == 0 and "notes" not in seen


def test_the_report_notes_a_cold_start_test_split(tmp_path):
    """A run whose dataset's test targets are all unseen in training: the report says so above its tables."""
    from bearrec.report import write_report
    from test_report import make_run

    items = {str(i): f"item {i}" for i in range(8)}
    splits = {"train": _rows([(["0"], "1")]), "valid": _rows([(["1"], "0")], "v"), "test": _rows([(["1"], "7")], "t")}
    save_dataset(Dataset(items=items, splits=splits, stats=compute_stats(items, splits, dropped={})), tmp_path / "data")
    runs = [make_run(tmp_path, m, 0, extra={"dataset": str(tmp_path / "data"), "dataset_path": str(tmp_path / "data")})
            for m in ("sft", "bear")]
    write_report(runs, tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Note: 1 of the test rows (100%) name a target the training split never shows" in md
    assert json.loads((tmp_path / "data" / "stats.json").read_text())["unseen_targets"]["test"]["share"] == 1.0
