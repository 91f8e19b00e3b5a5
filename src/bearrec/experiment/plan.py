"""The plan of an experiment: its stages and their order (prepare, index, tune and select, then per seed each
phase for every method, then the reports)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from .config import DatasetSpec, MethodSpec, _cell_name

if TYPE_CHECKING:
    from .work import Experiment

# The order of each seed's stages after tuning: a phase runs for every method before the next (evaluate: beam search;
# diagnose reads its lists and counts the entries above each positive, far cheaper than proving a top B), so the
# slow exact searches come last, those of the methods with masked scores first (about 100 expansions a row, against
# thousands under full scores).
FINAL_PHASES = {"baseline": 0, "train": 1, "evaluate": 2, "diagnose": 3, "exact": 4}
KINDS = ("prepare", "index", "tune", "select", *FINAL_PHASES, "report")


@dataclass
class Stage:
    """One step of an experiment: `run` does it, `done` tells whether an earlier invocation already did."""

    kind: str  # one of KINDS
    label: str
    run: Callable[[], Any]
    done: Callable[[], bool]
    # what it works on (None: every dataset, method or seed): a stage that fails stops the later stages it covers
    dataset: str | None = None
    method: str | None = None
    seed: int | None = None

    def covers(self, later: Stage) -> bool:
        """Whether `later` works on what this stage makes (its dataset, and its method and seed where it has one)."""
        return self.dataset == later.dataset and self.method in (None, later.method) and self.seed in (None, later.seed)


def stages(experiment: Experiment) -> list[Stage]:
    """Every stage in order: prepare the datasets, tune each grid on validation, train and evaluate the
    selected settings for every seed, then report."""
    plan: list[Stage] = []
    for ds in experiment.config.datasets:
        if ds.prepare is not None:
            plan.append(Stage("prepare", f"prepare {ds.name}", lambda ds=ds: experiment.prepare(ds),
                              lambda ds=ds: (experiment.dataset_dir(ds) / "stats.json").is_file()
                              and experiment.check_prepared(ds), ds.name))
        if ds.index is not None:
            plan.append(Stage("index", f"semantic IDs of {ds.name}", lambda ds=ds: experiment.index(ds),
                              lambda ds=ds: experiment.indexed(ds), ds.name))
    for ds in experiment.config.datasets:
        for method in experiment.config.methods:
            if method.grid:
                plan += tuning_stages(experiment, ds, method)
        full = {m.name for m in experiment.config.methods if m.score_mode == "full"}
        for seed in experiment.config.seeds:  # cheap first: every method's beam-search results before any exact search
            stages = [s for method in experiment.config.methods for s in final_stages(experiment, ds, method, seed)]
            plan += sorted(stages, key=lambda s: (FINAL_PHASES[s.kind], s.kind == "exact" and s.method in full))
        plan.append(Stage("report", f"report on {ds.name}", lambda ds=ds: experiment.write_report(ds), lambda: False,
                          ds.name))
    plan.append(Stage("report", "results tables", experiment.write_results, lambda: False))
    return plan


def tuning_stages(experiment: Experiment, ds: DatasetSpec, method: MethodSpec) -> list[Stage]:
    seed = experiment.config.tuning.seed
    stages = []
    for cell in method.cells():
        label = f"tune {method.name} {_cell_name(cell)} (seed {seed}, validation) on {ds.name}"
        stages.append(Stage("tune", label, lambda cell=cell: experiment.score_cell(ds, method, cell),
                            lambda cell=cell: experiment.cell_done(ds, method, cell), ds.name, method.name))
    stages.append(Stage("select", f"select {method.name}'s settings on {ds.name} (validation)",
                        lambda: experiment.select(ds, method), lambda: False, ds.name, method.name))
    return stages


def final_stages(experiment: Experiment, ds: DatasetSpec, method: MethodSpec, seed: int) -> list[Stage]:
    from ..run_dir import RunDir

    on, scope = f"{method.name} seed {seed} on {ds.name}", (ds.name, method.name, seed)
    # the run directory of the selected settings (read after tuning)
    run = lambda: RunDir(experiment.run_dir(ds, method, experiment.selected(ds, method), seed))  # noqa: E731
    if method.is_baseline:
        return [Stage("baseline", f"fit and rank {on} (test)",
                      lambda: experiment.run_baseline(ds, method, seed, "test"),
                      lambda: experiment.baseline_done(ds, method, seed, "test"), *scope)]
    stages = [Stage("train", f"train {on}", lambda: experiment.train(ds, method, seed),
                    lambda: run().model_dir.is_dir() and bool(experiment.llm_config(ds, method, None, seed)),
                    *scope)]
    for search in experiment.config.decoding.search:
        stages.append(Stage("evaluate" if search == "beam" else search,
                            f"decode and evaluate {on} (test, {search} search)",
                            lambda search=search: experiment.evaluate(run().path, "test", search),
                            lambda search=search: experiment.decoded(ds, run(), "test", search), *scope))
    rows = experiment.config.diagnosis.rows
    if rows != 0:
        stages.append(Stage("diagnose", f"diagnose pruning of {on} (test)", lambda: experiment.diagnose(run().path),
                            lambda: experiment.diagnosed(run()), *scope))
    return stages
