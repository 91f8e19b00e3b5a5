"""An experiment under one output folder: where each file goes, each run's settings, and the work of every stage
(prepare, index, train, decode, diagnose, fit the baselines, tune and select, report)."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from ..baseline_scorers import load_scorer, scorer_label
from ..baselines import baseline_done, run_baseline
from ..data import load_dataset, save_dataset
from ..data import prepare as prepare_dataset
from ..data.prepare import check_output_dir
from ..diagnose import diagnose_run
from ..errors import ConfigError
from ..evaluate import evaluate, predictions_are_current
from ..files import atomic_open, read_json_file, write_json
from ..report import results_markdown, write_report
from ..run_dir import RunDir
from ..searches import SearchOptions
from ..semantic_ids import INDEX_FILE
from ..semantic_index import CHECK_OPTIONS, build_index, describe_index
from ..train.config import ObjectiveConfig, TrainConfig, config_from_dict, set_dotted
from .config import (FINAL_PHASES, INDEX_OPTIONS, DatasetSpec, ExperimentConfig, MethodSpec, cell_name, config_error,
                     flatten)
from .stage import Stage


class Experiment:
    """The stages of an ExperimentConfig under one output folder, and the code that runs each."""
    def __init__(self, config: ExperimentConfig, output: str | Path | None = None):
        self.config = config
        self.out = Path(output or config.output or Path("runs") / config.name)
        self._datasets: dict[str, Any] = {}

    # ------------------------------------------------------------ paths
    def dataset_dir(self, ds: DatasetSpec) -> Path:
        return Path(ds.path) if ds.path is not None else self.out / "data" / ds.name

    def run_dir(self, ds: DatasetSpec, method: MethodSpec, cell: dict[str, Any], seed: int) -> Path:
        stem = method.name + (f"-{cell_name(cell)}" if cell else "")
        return self.out / "runs" / ds.name / f"{stem}-seed{seed}"

    def tuning_path(self, ds: DatasetSpec, method: MethodSpec) -> Path:
        return self.out / "tuning" / ds.name / f"{method.name}.json"

    def report_dir(self, ds: DatasetSpec) -> Path:
        return self.out / "report" / ds.name

    # ------------------------------------------------------------ settings
    def train_config(self, ds: DatasetSpec, method: MethodSpec, cell: dict[str, Any], seed: int) -> Any:
        """The TrainConfig of one LLM run: the shared `train` settings, the dataset's, the method's, then the cell's."""
        settings = {**flatten(copy.deepcopy(self.config.train)), **flatten(copy.deepcopy(ds.train)),
                    **method.settings, **cell}
        raw: dict[str, Any] = {}
        for key, value in settings.items():
            set_dotted(raw, key, value)
        objective = raw.pop("objective", None) or {}
        if "name" in objective:
            raise config_error(f"{self.config.source}: train.objective.name", "is set by each method's name.",
                        "remove it; list the methods under `methods`")
        objective.setdefault("num_beams", self.config.decoding.num_beams)
        raw.update(dataset=str(self.dataset_dir(ds)), output_dir=str(self.run_dir(ds, method, cell, seed)), seed=seed,
                   objective=ObjectiveConfig.for_method(method.method, **objective))
        if method.label is not None:
            raw["name"] = method.label
        return config_from_dict(raw)

    def baseline_settings(self, ds: DatasetSpec, method: MethodSpec, cell: dict[str, Any]) -> dict[str, Any]:
        """The baseline's settings; SASRec reads the same number of history items as the LLMs' prompts."""
        settings = {**method.settings, **cell}
        if method.method == "sasrec" and "max_len" not in settings:
            history = {**flatten(self.config.train), **flatten(ds.train)}.get("max_history")
            settings["max_len"] = history if history is not None else TrainConfig.__dataclass_fields__["max_history"].default
        return settings

    # ------------------------------------------------------------ stages
    def stages(self) -> list[Stage]:
        """Every stage in order (bearrec.experiment.plan)."""
        return stages(self)

    # ------------------------------------------------------------ the work
    def prepare(self, ds: DatasetSpec) -> None:
        """Prepare the dataset (and sample its test rows) into OUTPUT/data/<name>, recording the options used."""
        target = self.dataset_dir(ds)
        options = dict(ds.prepare or {})
        fmt, source = options.pop("format"), options.pop("source")
        try:
            check_output_dir(target, overwrite=False)
        except ConfigError:
            raise ConfigError(f"{target} holds files the experiment did not write. Fix: delete that folder, or name "
                              f"an already prepared dataset with datasets.{ds.name}.path.") from None
        dataset = prepare_dataset(fmt, source, None, test_sample=ds.test_sample, **options)
        write_json(self.prepare_record_path(ds), self.prepare_record(ds))  # first: a dataset never lacks its record
        save_dataset(dataset, target)

    def prepare_record_path(self, ds: DatasetSpec) -> Path:
        return self.dataset_dir(ds).parent / f"{ds.name}.prepare.json"

    def prepare_record(self, ds: DatasetSpec) -> dict[str, Any]:
        return {"prepare": ds.prepare, "test_sample": ds.test_sample}

    def check_prepared(self, ds: DatasetSpec) -> bool:
        """True when the prepared folder was made with the config's options; a ConfigError when with others, or
        when nothing records how it was made."""
        path = self.prepare_record_path(ds)
        if not path.is_file():
            raise ConfigError(f"{self.dataset_dir(ds)} holds a dataset the experiment has no record of ({path.name} is "
                              f"missing). Fix: delete {self.dataset_dir(ds)} to prepare it again, or name it with "
                              f"datasets.{ds.name}.path.")
        recorded = read_json_file(path, dict, f"delete {self.dataset_dir(ds)} to prepare it again")
        if recorded != json.loads(json.dumps(self.prepare_record(ds))):
            raise ConfigError(f"{self.dataset_dir(ds)} was prepared with other options ({path}: {recorded}); the "
                              f"config asks for {self.prepare_record(ds)}. Fix: delete {self.dataset_dir(ds)} and "
                              f"{path.name} to prepare it again, or restore the config's datasets.{ds.name} section.")
        return True

    def index(self, ds: DatasetSpec) -> None:
        """Compute the dataset's semantic IDs (`bearrec index` with the config's options) into its folder."""
        print(describe_index(build_index(self.dataset_dir(ds), **self.index_options(ds)), self.dataset_dir(ds)))

    def index_options(self, ds: DatasetSpec) -> dict[str, Any]:
        """The config's `bearrec index` options with their defaults filled in."""
        return {**INDEX_OPTIONS, **(ds.index or {})}

    def indexed(self, ds: DatasetSpec) -> bool:
        """True when semantic_ids.json is there, made with the config's options from this dataset; False when absent
        or made from another version of the dataset (redone); a ConfigError when made with other options."""
        path = self.dataset_dir(ds) / INDEX_FILE
        if not path.is_file():
            return False
        record = read_json_file(path, dict, f"delete {path} to compute it again")
        if record.get("dataset_fingerprint") != self.dataset(ds).fingerprint:
            return False
        made = {k: record.get(k) for k in INDEX_OPTIONS if k not in CHECK_OPTIONS}
        if made != {k: v for k, v in self.index_options(ds).items() if k not in CHECK_OPTIONS}:
            raise ConfigError(f"{path} was made with other options ({made}); the config asks for "
                              f"{self.index_options(ds)}. Fix: delete it to compute it again (runs trained on it "
                              f"refuse the new one), or restore the config's datasets.{ds.name}.index.")
        return True

    def dataset(self, ds: DatasetSpec) -> Any:
        """The prepared dataset (loaded once per experiment)."""
        if ds.name not in self._datasets:
            self._datasets[ds.name] = load_dataset(self.dataset_dir(ds))
        return self._datasets[ds.name]

    def llm_config(self, ds: DatasetSpec, method: MethodSpec, cell: dict[str, Any] | None, seed: int) -> Any:
        """The TrainConfig of one LLM run (cell None: the selected one), checked against its run directory: one made
        with another config, or on another version of the dataset, is a ConfigError."""
        from ..train import check_run_config  # transformers takes seconds to import: only to train

        config = self.train_config(ds, method, self.selected(ds, method) if cell is None else cell, seed)
        check_run_config(config.output_dir, config, self.dataset(ds).fingerprint)
        return config

    def check_runs(self) -> None:
        """Every run directory already under OUTPUT checked against the config (`llm_config`), before anything is
        written: a changed setting is refused with the diff of its keys, not after experiment.json was replaced."""
        for ds in self.config.datasets:
            if not (self.dataset_dir(ds) / "stats.json").is_file():
                continue
            for method in (m for m in self.config.methods if not m.is_baseline):
                for cell in method.cells():
                    for seed in {*self.config.seeds, self.config.tuning.seed}:
                        if (self.run_dir(ds, method, cell, seed) / "config.json").is_file():
                            self.llm_config(ds, method, cell, seed)

    def train(self, ds: DatasetSpec, method: MethodSpec, seed: int, cell: dict[str, Any] | None = None) -> Path:
        """Train (or resume) one LLM run unless its model is there."""
        from ..train import train  # transformers takes seconds to import: only to train

        config = self.llm_config(ds, method, cell, seed)
        run = RunDir(config.output_dir)
        if not run.model_dir.is_dir():
            train(config, resume=run.checkpoints_dir.is_dir())
        return run.path

    def decoded(self, ds: DatasetSpec, run: Any, split: str, search: str, options: SearchOptions | None = None,
                facts: dict[str, Any] | None = None) -> bool:
        """Whether `split`'s metrics exist, of predictions of every row decoded with the experiment's beams (and the
        variant's `options`, or the `facts` its rows record)."""
        facts = (options or SearchOptions()).facts(search) if facts is None else facts
        return run.artefact("metrics", split, search=search).is_file() and predictions_are_current(
            run.artefact("predictions", split, search=search), len(self.dataset(ds).split(split)),
            self.config.decoding.num_beams, search, facts)

    def diagnosed(self, run: Any) -> bool:
        """Whether the diagnosis of the configured rows exists, made with the experiment's beams."""
        path = run.artefact("diagnosis", limit=self.config.diagnosis.rows)
        return path.is_file() and read_json_file(path).get("num_beams") == self.config.decoding.num_beams

    def evaluate(self, run_dir: Path, split: str, search: str = "beam", options: SearchOptions | None = None) -> dict:
        d = self.config.decoding
        return evaluate(run_dir, split=split, num_beams=d.num_beams, batch_size=d.batch_size, search=search,
                        max_expansions=d.max_expansions, options=options)

    # ------------------------------------------------------------ beam search's variants: diverse, D3, IGD
    def selected_run_dir(self, ds: DatasetSpec, method: MethodSpec, seed: int) -> Path:
        """The run directory of `method`'s selected settings (read after tuning) at `seed`."""
        return self.run_dir(ds, method, self.selected(ds, method), seed)

    @property
    def assistant_method(self) -> MethodSpec:
        """D3's assistant: the baseline decoding.assistant names (the config checks there is one)."""
        return next(m for m in self.config.methods if m.name == self.config.decoding.assistant)

    def assistant_dir(self, ds: DatasetSpec, seed: int) -> Path:
        """The run directory of D3's assistant (its selected settings) at `seed`."""
        return self.selected_run_dir(ds, self.assistant_method, seed)

    def assistant(self, ds: DatasetSpec, seed: int) -> Path:
        """`assistant_dir`, fitted here if it is not yet (on validation: a fit scores nothing it must not see)."""
        if not self.assistant_fitted(ds, seed):
            self.run_baseline(ds, self.assistant_method, seed, "valid")
        return self.assistant_dir(ds, seed)

    def assistant_fitted(self, ds: DatasetSpec, seed: int) -> bool:
        """Whether D3's assistant at `seed` has been fitted and kept (its test or validation stage ran)."""
        return any(self.baseline_done(ds, self.assistant_method, seed, split) for split in ("test", "valid"))

    def search_options(self, ds: DatasetSpec, method: MethodSpec, seed: int, search: str,
                       weight: float | None = None) -> SearchOptions:
        """The settings `search` decodes `method`'s run of `seed` with: diverse beam search's groups and penalty; D3's
        assistant of the same seed, and D3's or IGD's weight tuned on validation (or `weight`)."""
        d = self.config.decoding
        if search == "diverse":
            return SearchOptions(groups=d.groups, diversity_penalty=d.diversity_penalty)
        if search == "igd":
            return SearchOptions(ig_weight=self.tuned_weight(ds, method, search) if weight is None else weight)
        if search != "d3" or d.assistant is None:
            return SearchOptions()
        weight = self.tuned_weight(ds, method, search) if weight is None else weight
        if weight == 0:  # the LLM alone: no assistant to load
            return SearchOptions()
        assistant = load_scorer(self.assistant(ds, seed))
        return SearchOptions(assistant=assistant, assistant_weight=weight, assistant_name=assistant.label)

    def weights(self, search: str) -> list[float] | None:
        """The weights a variant tunes on validation (D3's assistant weight, IGD's scaling); None: nothing to tune."""
        d = self.config.decoding
        if search == "d3":
            return d.assistant_weights if d.assistant is not None else None
        return d.ig_weights if search == "igd" else None

    def weight_tuning_path(self, ds: DatasetSpec, method: MethodSpec, search: str) -> Path:
        return self.out / "tuning" / ds.name / "weights" / f"{method.name}-{search}.json"

    def weight_record(self, ds: DatasetSpec, method: MethodSpec, search: str) -> dict[str, Any]:
        """What a weight's tuning depends on: a kept record made with anything else is started over."""
        seed, d = self.config.tuning.seed, self.config.decoding
        record = {"metric": self.config.tuning.metric, "split": "valid", "seed": seed, "weights": self.weights(search),
                  "num_beams": d.num_beams, "run": str(self.selected_run_dir(ds, method, seed))}
        if search == "d3":
            record["assistant"] = str(self.assistant_dir(ds, seed))
        return record

    def kept_weights(self, ds: DatasetSpec, method: MethodSpec, search: str) -> dict[str, Any]:
        """The kept tuning record of `search`'s weight when it was made with today's settings, else a fresh one."""
        path, fresh = self.weight_tuning_path(ds, method, search), self.weight_record(ds, method, search)
        record = read_json_file(path) if path.is_file() else {}
        return record if {k: record.get(k) for k in fresh} == fresh else {**fresh, "scores": {}}

    def tuned_weight(self, ds: DatasetSpec, method: MethodSpec, search: str) -> float:
        """`search`'s weight for `method` (D3's assistant weight, IGD's scaling): of its configured weights, the best
        on the whole validation split at the tuning seed (the first of equals). Each weight's score is kept as soon
        as it is known, so an interrupted tuning resumes with the next weight."""
        path, seed, weights = self.weight_tuning_path(ds, method, search), self.config.tuning.seed, self.weights(search)
        record = self.kept_weights(ds, method, search)
        if record.get("selected") is not None:
            return float(record["selected"])
        run = self.train(ds, method, seed, self.selected(ds, method))  # the run of selected_run_dir, trained if need be
        for w in weights:
            if str(w) not in record["scores"]:
                options = self.search_options(ds, method, seed, search, weight=w)
                record["scores"][str(w)] = float(self.evaluate(run, "valid", search, options)[self.config.tuning.metric])
                write_json(path, record)
        record["selected"] = max(weights, key=lambda w: (record["scores"][str(w)], -weights.index(w)))
        write_json(path, record)
        return float(record["selected"])

    def variant_decoded(self, ds: DatasetSpec, method: MethodSpec, seed: int, run: Any, search: str) -> bool:
        """Whether the test split is decoded by `search` with its tuned weight; reads files only (False while the
        weight is not tuned, or D3's assistant at this seed not fitted)."""
        options = SearchOptions()
        if self.weights(search) is not None:
            weight = self.kept_weights(ds, method, search).get("selected")
            if weight is None:
                return False
            if search == "igd":
                options = SearchOptions(ig_weight=weight)
            elif weight > 0:
                if not self.assistant_fitted(ds, seed):
                    return False
                label = scorer_label(self.assistant_dir(ds, seed))
                return self.decoded(ds, run, "test", search, facts={"assistant": label, "assistant_weight": weight})
        return self.decoded(ds, run, "test", search, options)

    def diagnose(self, run_dir: Path) -> dict:
        d = self.config.diagnosis
        return diagnose_run(run_dir, split="test", num_beams=self.config.decoding.num_beams, limit=d.rows,
                            max_expansions=d.max_expansions, batch_size=d.batch_size)

    def _baseline_args(self, ds: DatasetSpec, method: MethodSpec, seed: int, split: str,
                       cell: dict[str, Any] | None) -> tuple[tuple, dict]:
        cell = self.selected(ds, method) if cell is None else cell
        return ((method.method, self.dataset_dir(ds), self.run_dir(ds, method, cell, seed)),
                {"split": split, "seed": seed, "settings": self.baseline_settings(ds, method, cell),
                 "k": self.config.decoding.num_beams, "name": method.label})

    def run_baseline(self, ds: DatasetSpec, method: MethodSpec, seed: int, split: str,
                     cell: dict[str, Any] | None = None) -> dict:
        """Fit a baseline (cell None: the selected settings) and score it on `split`; its metrics."""
        args, kwargs = self._baseline_args(ds, method, seed, split, cell)
        return run_baseline(*args, **kwargs)

    def baseline_done(self, ds: DatasetSpec, method: MethodSpec, seed: int, split: str,
                      cell: dict[str, Any] | None = None) -> bool:
        """Whether run_baseline would find its work done (a folder of other settings is a ConfigError)."""
        args, kwargs = self._baseline_args(ds, method, seed, split, cell)
        return baseline_done(*args, **kwargs)

    def score_cell(self, ds: DatasetSpec, method: MethodSpec, cell: dict[str, Any]) -> float:
        """Train (or fit) one grid cell at the tuning seed and score it on the whole validation split."""
        seed = self.config.tuning.seed
        if method.is_baseline:
            metrics = self.run_baseline(ds, method, seed, "valid", cell)
        else:
            metrics = self.evaluate(self.train(ds, method, seed, cell), "valid")
        return float(metrics[self.config.tuning.metric])

    def cell_done(self, ds: DatasetSpec, method: MethodSpec, cell: dict[str, Any]) -> bool:
        """Whether the cell's validation score exists and was made with the cell's settings and the experiment's
        beams (a run directory of other settings is a ConfigError)."""
        seed = self.config.tuning.seed
        if method.is_baseline:
            return self.baseline_done(ds, method, seed, "valid", cell)
        run = RunDir(self.llm_config(ds, method, cell, seed).output_dir)
        return run.model_dir.is_dir() and self.decoded(ds, run, "valid", "beam")

    def cell_score(self, ds: DatasetSpec, method: MethodSpec, cell: dict[str, Any]) -> float | None:
        """The cell's validation score, if an earlier stage computed it."""
        path = RunDir(self.run_dir(ds, method, cell, self.config.tuning.seed)).artefact("metrics", "valid")
        if not path.is_file():
            return None
        value = read_json_file(path).get(self.config.tuning.metric)
        return None if value is None else float(value)

    def select(self, ds: DatasetSpec, method: MethodSpec) -> dict[str, Any]:
        """The grid cell with the best validation score (the first of equals); written to tuning/<dataset>/."""
        cells = method.cells()
        scores = [self.cell_score(ds, method, cell) for cell in cells]
        if any(s is None for s in scores):
            missing = cell_name(cells[scores.index(None)])
            raise ConfigError(f"{method.name} cell {missing} on {ds.name} has no validation score. Fix: run the "
                              "experiment again (its tuning stage computes it).")
        best = max(range(len(cells)), key=lambda i: (scores[i], -i))
        write_json(self.tuning_path(ds, method), {
            "metric": self.config.tuning.metric, "split": "valid", "seed": self.config.tuning.seed,
            "cells": [{"settings": c, "name": cell_name(c), "score": s,
                       "run": str(self.run_dir(ds, method, c, self.config.tuning.seed))} for c, s in zip(cells, scores)],
            "selected": cells[best]})
        return cells[best]

    def selected(self, ds: DatasetSpec, method: MethodSpec) -> dict[str, Any]:
        """The settings chosen by tuning ({} for a method without a grid)."""
        if not method.grid:
            return {}
        path = self.tuning_path(ds, method)
        if not path.is_file():
            raise ConfigError(f"{method.name} on {ds.name} has not been tuned yet ({path} is missing). Fix: run the "
                              "whole experiment; its tuning stages come first.")
        record = read_json_file(path, dict, "delete it; the experiment selects again")
        selected = record.get("selected")
        if selected not in method.cells() or record.get("metric") != self.config.tuning.metric:
            raise ConfigError(f"{path} was selected over another grid or metric than the config's. Fix: delete it; "
                              "the experiment selects again from the validation scores.")
        return selected

    def final_runs(self, ds: DatasetSpec) -> list[Path]:
        return [self.run_dir(ds, m, self.selected(ds, m), s) for s in self.config.seeds for m in self.config.methods]

    def write_report(self, ds: DatasetSpec) -> tuple[Path, Path]:

        title = self.config.report.title or f"{self.config.name}: {ds.name}"
        return write_report(self.final_runs(ds), self.report_dir(ds), title=title,
                            bootstrap_metric=self.config.report.bootstrap_metric)

    def write_results(self) -> Path:
        """results.md and results.json: each dataset's results table (from its report's summary.json) and tuning."""
        lines = [f"# {self.config.name}", "",
                 f"Config: {self.config.source}; seeds {', '.join(map(str, self.config.seeds))}; "
                 f"{self.config.decoding.num_beams} beams; tuned on the validation split by "
                 f"{self.config.tuning.metric} (seed {self.config.tuning.seed}); test split decoded once.", ""]
        everything: dict[str, Any] = {}
        for ds in self.config.datasets:
            summary = read_json_file(self.report_dir(ds) / "summary.json")
            tuning = {m.name: read_json_file(self.tuning_path(ds, m)) for m in self.config.methods if m.grid}
            everything[ds.name] = {"summary": summary, "tuning": tuning,
                                   "report": str(self.report_dir(ds) / "report.html")}
            lines += [f"## {ds.name}", "", results_markdown(summary).rstrip(), ""]
            for name, record in tuning.items():
                lines += [f"Tuning {name} (validation {record['metric']}, seed {record['seed']}): "
                          + ", ".join(f"{c['name']} {c['score']:.4f}" for c in record["cells"])
                          + f"; selected {cell_name(record['selected'])}.", ""]
            weighted = {(m.name, search): read_json_file(self.weight_tuning_path(ds, m, search))
                        for m in self.config.methods for search in ("d3", "igd")
                        if self.weights(search) is not None and self.weight_tuning_path(ds, m, search).is_file()}
            everything[ds.name]["weight_tuning"] = {f"{name} {search}": r for (name, search), r in weighted.items()}
            for (name, search), record in weighted.items():
                what = "D3 assistant weight" if search == "d3" else "IGD decoding weight"
                lines += [f"{what} of {name} (validation {record['metric']}, seed {record['seed']}): "
                          + ", ".join(f"{w} {score:.4f}" for w, score in record["scores"].items())
                          + f"; selected {record.get('selected')}.", ""]
            lines += [f"Report: {self.report_dir(ds) / 'report.html'}", ""]
        path = self.out / "results.md"
        with atomic_open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines))
        write_json(self.out / "results.json", everything)
        return path


# ---------------------------------------------------------------- the plan: the stages and their order
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
    """Every grid cell of a method trained and scored on validation at the tuning seed, then the selection."""
    seed = experiment.config.tuning.seed
    stages = []
    for cell in method.cells():
        label = f"tune {method.name} {cell_name(cell)} (seed {seed}, validation) on {ds.name}"
        stages.append(Stage("tune", label, lambda cell=cell: experiment.score_cell(ds, method, cell),
                            lambda cell=cell: experiment.cell_done(ds, method, cell), ds.name, method.name))
    stages.append(Stage("select", f"select {method.name}'s settings on {ds.name} (validation)",
                        lambda: experiment.select(ds, method), lambda: False, ds.name, method.name))
    return stages


def final_stages(experiment: Experiment, ds: DatasetSpec, method: MethodSpec, seed: int) -> list[Stage]:
    """A seed's stages of one method after tuning: train (or fit the baseline), decode and evaluate, diagnose."""
    on, scope = f"{method.name} seed {seed} on {ds.name}", (ds.name, method.name, seed)
    # the run directory of the selected settings (read after tuning)
    run = lambda: RunDir(experiment.selected_run_dir(ds, method, seed))  # noqa: E731
    if method.is_baseline:
        return [Stage("baseline", f"fit and rank {on} (test)",
                      lambda: experiment.run_baseline(ds, method, seed, "test"),
                      lambda: experiment.baseline_done(ds, method, seed, "test"), *scope)]
    stages = [Stage("train", f"train {on}", lambda: experiment.train(ds, method, seed),
                    lambda: run().model_dir.is_dir() and bool(experiment.llm_config(ds, method, None, seed)),
                    *scope)]
    for search in experiment.config.decoding.search:
        if search in ("d3", "igd"):  # their weight is tuned on validation first
            done = lambda search=search: experiment.variant_decoded(ds, method, seed, run(), search)  # noqa: E731
        else:
            done = lambda search=search: experiment.decoded(  # noqa: E731
                ds, run(), "test", search, experiment.search_options(ds, method, seed, search))
        stages.append(Stage("evaluate" if search == "beam" else search,
                            f"decode and evaluate {on} (test, {search} search)",
                            lambda search=search: experiment.evaluate(
                                run().path, "test", search, experiment.search_options(ds, method, seed, search)),
                            done, *scope))
    rows = experiment.config.diagnosis.rows
    if rows != 0:
        stages.append(Stage("diagnose", f"diagnose pruning of {on} (test)", lambda: experiment.diagnose(run().path),
                            lambda: experiment.diagnosed(run()), *scope))
    return stages
