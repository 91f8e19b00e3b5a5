"""The comparison report over training/evaluation runs: one self-contained HTML page, a Markdown twin with its PNG
files, summary.json, and results.md's compact tables (`bearrec report`, `bearrec experiment`).

One module per concept: runs (the run-directory contract, loading, a row per decoding mode, grouping into methods in
the method registry's report order), columns (metric names, meanings, cell text), bootstrap (mean ± std over seeds,
paired bootstrap), compare (paired comparisons), figures (plots), sections, render (HTML and Markdown), write
(`write_report`) and results (`results_markdown`).
"""
from __future__ import annotations

from ..methods import report_order
from .columns import HEADLINE_METRICS, column_name
from .results import results_markdown
from .runs import ALT_SEARCHES, RUN_KINDS, RunResult, discover_runs, load_run, load_runs, run_dataset
from .write import write_report

METHOD_ORDER = report_order()  # the registry's, kept under its old name

__all__ = ["ALT_SEARCHES", "HEADLINE_METRICS", "METHOD_ORDER", "RUN_KINDS", "RunResult", "column_name", "discover_runs",
           "load_run", "load_runs", "results_markdown", "run_dataset", "write_report"]
