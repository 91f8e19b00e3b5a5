"""`bearrec experiment CONFIG.yaml`: a whole comparison from one file: datasets x methods x seeds, each method's grid
tuned on the validation split, the test split decoded once, diagnosed, reported.

OUTPUT (the config's `output`, or --output) holds:
  experiment.json                  the resolved config of the latest invocation
  data/<dataset>/                  the datasets the config prepares (with prepare.json: the options they were made with,
                                   and semantic_ids.json where the dataset has `index` options, for `items: semantic_id`;
                                   a dataset given by `path` gets its semantic_ids.json in that folder)
  runs/<dataset>/<method>[-<cell>]-seed<seed>/   ordinary run directories: every other command works on them. A grid
                                   cell at the tuning seed is a tuning run and, when selected, also the final run.
  tuning/<dataset>/<method>.json   every cell's validation score and the cell selected (the test split is not read)
  report/<dataset>/                report.html, report.md, summary.json (bearrec.report)
  results.md, results.json         the results of every dataset, one section each
Every stage is skipped once its output exists, and trainings resume from their last checkpoint, so an interrupted
experiment continues where it stopped when run again.
"""
from __future__ import annotations

import contextvars
import copy
import itertools
import json
import re
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..baselines import BASELINES
from ..errors import ConfigError
from ..io import read_json_file, write_json

SEARCHES = ("beam", "exact")
DEMO_CONFIG = "demo.yaml"  # shipped in bearrec/configs/

# The stage being run (kind, label): lets a caller (or a test) tell tuning from the rest while it runs.
CURRENT_STAGE: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("stage", default=None)


# ---------------------------------------------------------------- the config

def _index_defaults() -> dict[str, Any]:
    """`bearrec index`'s options and their defaults: semantic_ids.build_index's keyword arguments."""
    import inspect

    from ..semantic_ids import build_index

    return {name: p.default for name, p in inspect.signature(build_index).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY}


INDEX_OPTIONS = _index_defaults()


@dataclass
class DatasetSpec:
    """One dataset: a prepared folder (`path`), or how to prepare one (`prepare`: bearrec.data.prepare's format, source
    and options), with an optional seeded sample of its test rows and TrainConfig settings of its own (e.g. domain)."""

    name: str
    path: str | None = None
    prepare: dict[str, Any] | None = None
    test_sample: int | None = None
    train: dict[str, Any] = field(default_factory=dict)
    # semantic IDs for runs with `items: semantic_id`: `bearrec index` options (levels, codes, embeddings, seed)
    index: dict[str, Any] | None = None


@dataclass
class MethodSpec:
    """One method: its name in the tables (the key under `methods`), what it runs (`method`: a training objective's
    method name, sft, msl, bear, bear-sft, msl+ce..., or a baseline; default the name), its settings (dotted TrainConfig
    keys, or the baseline's settings) and a grid of settings tuned on validation. A name of its own lets one objective
    appear twice, e.g. `sid-sft: {method: sft, items: semantic_id}` beside `sft`."""

    name: str
    settings: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    method: str = ""

    def __post_init__(self) -> None:
        self.method = self.method or self.name

    @property
    def label(self) -> str | None:
        """The name runs are reported under when it is not the method's own (None: the method's)."""
        return self.name if self.name != self.method else None

    @property
    def is_baseline(self) -> bool:
        return self.method in BASELINES

    def cells(self) -> list[dict[str, Any]]:
        """Every combination of the grid's values ([{}] without a grid), in the grid's order."""
        keys = list(self.grid)
        return [dict(zip(keys, values)) for values in itertools.product(*(self.grid[k] for k in keys))]


@dataclass
class Tuning:
    seed: int = 0  # the seed every grid cell is trained with
    metric: str = "ndcg@10"  # read from the cell's validation metrics


@dataclass
class Decoding:
    num_beams: int = 10
    search: list[str] = field(default_factory=lambda: ["beam"])  # test split decoded with each
    max_expansions: int = 2000  # exact search: model evaluations per row
    batch_size: int = 16


@dataclass
class Diagnosis:
    rows: int | None = None  # the first N test rows (None: all; 0: no diagnosis)
    max_expansions: int = 2000
    batch_size: int = 8


@dataclass
class ReportSpec:
    title: str | None = None
    bootstrap_metric: str = "ndcg@10"


@dataclass
class ExperimentConfig:
    """A whole comparison (see the module docstring and the README's "Experiments")."""

    name: str
    datasets: list[DatasetSpec]
    methods: list[MethodSpec]
    seeds: list[int] = field(default_factory=lambda: [0])
    output: str | None = None
    train: dict[str, Any] = field(default_factory=dict)
    tuning: Tuning = field(default_factory=Tuning)
    decoding: Decoding = field(default_factory=Decoding)
    diagnosis: Diagnosis = field(default_factory=Diagnosis)
    report: ReportSpec = field(default_factory=ReportSpec)
    source: str = "<dict>"  # the file it was read from (for messages)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _fail(where: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"{where}: {problem} Fix: {fix}.")


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"objective": {"lam": 1}} -> {"objective.lam": 1}: dotted and nested settings mean the same."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _section(cls: type, raw: Any, where: str) -> Any:
    """cls(**raw) with an error naming the file, the section and the unknown key."""
    from dataclasses import fields

    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise _fail(where, f"must be a mapping, got {raw!r}.", f"write `{where.split(': ')[-1]}:` as key: value lines")
    names = [f.name for f in fields(cls)]
    unknown = [k for k in raw if k not in names]
    if unknown:
        raise _fail(where, f"unknown key {unknown[0]!r}; valid keys: {', '.join(names)}.", "check the spelling")
    return cls(**raw)


def _method(name: str, raw: Any, where: str) -> MethodSpec:
    from ..train.config import ObjectiveConfig

    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise _fail(where, f"must map settings to values, got {raw!r}.", "write e.g. `bear: {objective.lam: 0.5}`")
    raw = dict(raw)
    runs = raw.pop("method", name)
    if not isinstance(runs, str) or not re.fullmatch(r"[\w.+@-]+", name):
        raise _fail(where, f"needs a plain name and a method name (got {name!r}, method {runs!r}).",
                    "e.g. `sid-sft: {method: sft, items: semantic_id}`")
    grid = raw.pop("grid", None) or {}
    if not isinstance(grid, dict):
        raise _fail(f"{where}.grid", f"must map settings to lists of values, got {grid!r}.",
                    "write e.g. `grid: {objective.lam: [0.1, 1.0]}`")
    grid = _flatten(grid)
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise _fail(f"{where}.grid.{key}", f"must be a non-empty list of values, got {values!r}.",
                        f"write e.g. `{key}: [0.1, 1.0]`")
    if runs not in BASELINES:
        try:
            ObjectiveConfig.for_method(runs)
        except ConfigError as e:
            raise _fail(where, f"{runs!r} is neither a baseline ({', '.join(BASELINES)}) nor a method: {e}",
                        "name a baseline or a method such as sft, msl, bear, direct, bear-sft, msl+ce (or give a "
                        "name of your own and `method: ...`)") from None
    settings = _flatten(raw)
    for key in list(settings) + list(grid):
        place = f"{where}.{'grid.' if key in grid else ''}{key}"
        if key.split(".")[-1] in ("name", "base", "single_child_ce") and key.startswith("objective"):
            raise _fail(place, "is set by the method's name.",
                        "name the method instead (bear-sft for base sft, bear+ce for single_child_ce)")
        if key in RUN_KEYS:
            raise _fail(place, "is set by the experiment for every run.", RUN_KEYS_FIX)
    overlap = sorted(set(settings) & set(grid))
    if overlap:
        raise _fail(f"{where}.grid.{overlap[0]}", "is also set outside the grid.", "set it in one place")
    return MethodSpec(name=name, settings=settings, grid=grid, method=runs)


# TrainConfig keys the experiment sets for each run (seeds from `seeds`, paths from the output folder).
RUN_KEYS = ("seed", "dataset", "output_dir", "name")
RUN_KEYS_FIX = ("list seeds under `seeds`; the datasets under `datasets`; the output folder under `output`; a method's "
                "key under `methods` names its runs")


def _mapping(value: Any, where: str, example: str) -> dict:
    """`value` if it is a mapping (None: empty), else a ConfigError naming `where`."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(where, f"must be a mapping of settings, got {value!r}.", f"write e.g. `{example}`")
    return value


def experiment_from_dict(raw: dict[str, Any], source: str = "<dict>") -> ExperimentConfig:
    """An ExperimentConfig from the YAML's mapping, every section and key checked (errors name `source`)."""
    from ..cli_args import per_row_metric

    if not isinstance(raw, dict):
        raise _fail(source, "must hold a mapping at the top level.", "start from configs/experiments/office-tiny.yaml")
    raw = dict(raw)
    known = {"name", "datasets", "methods", "seeds", "output", "train", "tuning", "decoding", "diagnosis", "report"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise _fail(source, f"unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(known))}.", "check the spelling")
    for key in ("name", "datasets", "methods"):
        if not raw.get(key):
            raise _fail(source, f"has no {key!r}.", "see configs/experiments/office-tiny.yaml for a complete example")
    if not isinstance(raw["name"], str) or not re.fullmatch(r"[\w.+-]+", raw["name"]):
        raise _fail(f"{source}: name", f"must be a plain name (letters, digits, . _ + -), got {raw['name']!r}.",
                    "e.g. name: office-tiny")
    if not isinstance(raw["datasets"], dict):
        raise _fail(f"{source}: datasets", "must map dataset names to their settings.",
                    "write e.g. `datasets: {office: {path: data/office}}`")
    datasets = []
    for name, spec in raw["datasets"].items():
        where = f"{source}: datasets.{name}"
        if not re.fullmatch(r"[\w.+-]+", str(name)):
            raise _fail(where, "is not a plain name (letters, digits, . _ + -).", "rename the dataset")
        spec = _mapping(spec, where, f"{name}: {{path: data/{name}}}")
        ds = _section(DatasetSpec, {"name": str(name), **spec}, where)
        ds.train = _mapping(ds.train, f"{where}.train", "train: {domain: office}")
        if ds.prepare is not None:
            ds.prepare = _mapping(ds.prepare, f"{where}.prepare", "prepare: {format: bear-csv, source: DIR}")
        if (ds.path is None) == (ds.prepare is None):
            raise _fail(where, "needs exactly one of `path` (a prepared dataset) and `prepare` (how to prepare it).",
                        "e.g. `path: data/office`, or `prepare: {format: bear-csv, source: DIR}`")
        if ds.prepare is not None and not {"format", "source"} <= set(ds.prepare):
            raise _fail(f"{where}.prepare", "needs `format` and `source` (as `bearrec prepare FORMAT SOURCE`).",
                        "e.g. `prepare: {format: movielens-100k, source: '-'}`")
        if ds.test_sample is not None and (not isinstance(ds.test_sample, int) or ds.test_sample < 1):
            raise _fail(f"{where}.test_sample", f"must be a positive integer, got {ds.test_sample!r}.", "or leave it out")
        if ds.test_sample is not None and ds.prepare is None:
            raise _fail(f"{where}.test_sample", "samples the test rows of a dataset the experiment prepares, not of "
                        "one given by `path`.", "give `prepare` instead of `path`, or leave test_sample out")
        if ds.index is not None:
            ds.index = _mapping(ds.index, f"{where}.index", "index: {levels: 3, codes: 32, embeddings: collaborative}")
            unknown = sorted(set(ds.index) - set(INDEX_OPTIONS))
            if unknown:
                raise _fail(f"{where}.index.{unknown[0]}", f"is not an option of `bearrec index`; valid: "
                            f"{', '.join(INDEX_OPTIONS)}.", "check the spelling")
        datasets.append(ds)
    methods_raw = raw["methods"]
    if isinstance(methods_raw, list):
        methods_raw = {str(m): {} for m in methods_raw}
    if not isinstance(methods_raw, dict):
        raise _fail(f"{source}: methods", "must list method names, or map them to their settings.",
                    "e.g. `methods: [sft, bear, popularity]`")
    methods = [_method(str(name), spec, f"{source}: methods.{name}") for name, spec in methods_raw.items()]
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                            for s in seeds) or len(set(seeds)) < len(seeds):
        raise _fail(f"{source}: seeds", f"must be a list of distinct integers, got {seeds!r}.", "e.g. seeds: [0, 1, 2]")
    train = _mapping(raw.get("train"), f"{source}: train", "train: {model: tiny}")
    for key in RUN_KEYS:
        for where, section in [("train", train)] + [(f"datasets.{d.name}.train", d.train) for d in datasets]:
            if key in section:
                raise _fail(f"{source}: {where}.{key}", "is set by the experiment for every run.", RUN_KEYS_FIX)
    if raw.get("output") is not None and not isinstance(raw["output"], str):
        raise _fail(f"{source}: output", f"must be a folder name, got {raw['output']!r}.", "e.g. output: runs/mine")
    config = ExperimentConfig(
        name=raw["name"], datasets=datasets, methods=methods, seeds=seeds, output=raw.get("output"),
        train=train, tuning=_section(Tuning, raw.get("tuning"), f"{source}: tuning"),
        decoding=_section(Decoding, raw.get("decoding"), f"{source}: decoding"),
        diagnosis=_section(Diagnosis, raw.get("diagnosis"), f"{source}: diagnosis"),
        report=_section(ReportSpec, raw.get("report"), f"{source}: report"), source=source)
    if isinstance(config.decoding.search, str):
        config.decoding.search = [config.decoding.search]
    if not isinstance(config.decoding.search, list):
        raise _fail(f"{source}: decoding.search", f"must list search modes, got {config.decoding.search!r}.",
                    "e.g. search: [beam, exact]")
    bad = [s for s in config.decoding.search if s not in SEARCHES]
    if bad or not config.decoding.search:
        raise _fail(f"{source}: decoding.search", f"must list search modes among {', '.join(SEARCHES)}, got "
                    f"{config.decoding.search!r}.", "e.g. search: [beam, exact]")
    for key, value in (("decoding.num_beams", config.decoding.num_beams), ("decoding.batch_size",
                       config.decoding.batch_size), ("decoding.max_expansions", config.decoding.max_expansions)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise _fail(f"{source}: {key}", f"must be an integer >= 1, got {value!r}.", "e.g. 10")
    for key, value, least in (("tuning.seed", config.tuning.seed, None), ("diagnosis.rows", config.diagnosis.rows, 0),
                              ("diagnosis.max_expansions", config.diagnosis.max_expansions, 1),
                              ("diagnosis.batch_size", config.diagnosis.batch_size, 1)):
        if (value is None and key == "diagnosis.rows") or (isinstance(value, int) and not isinstance(value, bool)
                                                           and (least is None or value >= least)):
            continue
        raise _fail(f"{source}: {key}", f"must be an integer{'' if least is None else f' >= {least}'}, got "
                    f"{value!r}.", "e.g. 0" if least is not None else "e.g. 0")
    for key, value in (("tuning.metric", config.tuning.metric), ("report.bootstrap_metric",
                                                                 config.report.bootstrap_metric)):
        try:
            per_row_metric(value)
        except Exception:
            raise _fail(f"{source}: {key}", f"must be hr@K, ndcg@K or mrr@K, got {value!r}.", "e.g. ndcg@10") from None
        if int(value.split("@")[1]) > config.decoding.num_beams:
            raise _fail(f"{source}: {key}", f"{value} needs lists longer than the {config.decoding.num_beams} "
                        "recommended.", "lower K, or raise decoding.num_beams")
    check_settings(config)
    return config


def check_settings(config: ExperimentConfig) -> None:
    """Build every run's settings once (without running anything), so that a wrong key or value is reported with
    its place in the file before the first stage, not hours into the experiment."""
    from ..baselines import resolve_settings

    experiment = Experiment(config, "/nonexistent")
    for method in config.methods:
        for cell in method.cells():
            where = f"{config.source}: methods.{method.name}" + (f" (grid cell {_cell_name(cell)})" if cell else "")
            try:
                if method.is_baseline:
                    if method.method == "popularity" and (method.settings or cell):
                        raise ConfigError("popularity takes no settings.")
                    resolve_settings(method.method, experiment.baseline_settings(config.datasets[0], method, cell))
                else:
                    for ds in config.datasets:
                        experiment.train_config(ds, method, cell, config.seeds[0])
            except ConfigError as e:
                raise ConfigError(f"{where}: {e}" + ("" if "Fix:" in str(e) else " Fix: correct that setting.")) from None


def load_experiment(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read an experiment YAML file and apply `key=value` overrides (dotted, as `bearrec train` takes them)."""
    from ..train.config import read_settings

    return experiment_from_dict(read_settings(path, overrides, examples="configs/experiments/"), str(path))


def demo_config_path() -> Path:
    """The experiment config `bearrec demo` runs (shipped inside the package)."""
    from importlib import resources

    return Path(str(resources.files("bearrec") / "configs" / DEMO_CONFIG))


# ---------------------------------------------------------------- the plan

# The order of each seed's stages after tuning: a phase runs for every method before the next (evaluate: beam search;
# diagnose reads its lists and counts the entries above each positive, far cheaper than proving a top B), so the
# slow exact searches come last.
FINAL_PHASES = {"baseline": 0, "train": 1, "evaluate": 2, "diagnose": 3, "exact": 4}


@dataclass
class Stage:
    """One step of an experiment: `run` does it, `done` tells whether an earlier invocation already did."""

    kind: str  # prepare, index, tune, select, then FINAL_PHASES, then report
    label: str
    run: Callable[[], Any]
    done: Callable[[], bool]


def _cell_name(cell: dict[str, Any]) -> str:
    """A folder-safe name of a grid cell: "lam0.25-xi1.0" for {"objective.lam": 0.25, "objective.xi": 1.0}."""
    parts = []
    for key, value in cell.items():
        text = json.dumps(value) if not isinstance(value, str) else value
        parts.append(re.sub(r"[^\w.+]", "_", key.split(".")[-1] + text))
    return "-".join(parts)


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
        stem = method.name + (f"-{_cell_name(cell)}" if cell else "")
        return self.out / "runs" / ds.name / f"{stem}-seed{seed}"

    def tuning_path(self, ds: DatasetSpec, method: MethodSpec) -> Path:
        return self.out / "tuning" / ds.name / f"{method.name}.json"

    def report_dir(self, ds: DatasetSpec) -> Path:
        return self.out / "report" / ds.name

    # ------------------------------------------------------------ settings
    def train_config(self, ds: DatasetSpec, method: MethodSpec, cell: dict[str, Any], seed: int) -> Any:
        """The TrainConfig of one LLM run: the shared `train` settings, the dataset's, the method's, then the cell's."""
        from ..train.config import ObjectiveConfig, config_from_dict, set_dotted

        settings = {**_flatten(copy.deepcopy(self.config.train)), **_flatten(copy.deepcopy(ds.train)),
                    **method.settings, **cell}
        raw: dict[str, Any] = {}
        for key, value in settings.items():
            set_dotted(raw, key, value)
        objective = raw.pop("objective", None) or {}
        if "name" in objective:
            raise _fail(f"{self.config.source}: train.objective.name", "is set by each method's name.",
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
            from ..train.config import TrainConfig

            history = {**_flatten(self.config.train), **_flatten(ds.train)}.get("max_history")
            settings["max_len"] = history if history is not None else TrainConfig.__dataclass_fields__["max_history"].default
        return settings

    # ------------------------------------------------------------ stages
    def stages(self) -> list[Stage]:
        """Every stage in order: prepare the datasets, tune each grid on validation, train and evaluate the
        selected settings for every seed, then report."""
        plan: list[Stage] = []
        for ds in self.config.datasets:
            if ds.prepare is not None:
                plan.append(Stage("prepare", f"prepare {ds.name}", lambda ds=ds: self.prepare(ds),
                                  lambda ds=ds: (self.dataset_dir(ds) / "stats.json").is_file()
                                  and self.check_prepared(ds)))
            if ds.index is not None:
                plan.append(Stage("index", f"semantic IDs of {ds.name}", lambda ds=ds: self.index(ds),
                                  lambda ds=ds: self.indexed(ds)))
        for ds in self.config.datasets:
            for method in self.config.methods:
                if method.grid:
                    plan += self.tuning_stages(ds, method)
            for seed in self.config.seeds:  # cheap first: every method's beam-search results before any exact search
                stages = [s for method in self.config.methods for s in self.final_stages(ds, method, seed)]
                plan += sorted(stages, key=lambda s: FINAL_PHASES[s.kind])
            plan.append(Stage("report", f"report on {ds.name}", lambda ds=ds: self.write_report(ds), lambda: False))
        plan.append(Stage("report", "results tables", self.write_results, lambda: False))
        return plan

    def tuning_stages(self, ds: DatasetSpec, method: MethodSpec) -> list[Stage]:
        seed = self.config.tuning.seed
        stages = []
        for cell in method.cells():
            label = f"tune {method.name} {_cell_name(cell)} (seed {seed}, validation) on {ds.name}"
            stages.append(Stage("tune", label, lambda cell=cell: self.score_cell(ds, method, cell),
                                lambda cell=cell: self.cell_done(ds, method, cell)))
        stages.append(Stage("select", f"select {method.name}'s settings on {ds.name} (validation)",
                            lambda: self.select(ds, method), lambda: False))
        return stages

    def final_stages(self, ds: DatasetSpec, method: MethodSpec, seed: int) -> list[Stage]:
        from ..run_dir import RunDir

        on = f"{method.name} seed {seed} on {ds.name}"
        run = lambda: RunDir(self.run_dir(ds, method, self.selected(ds, method), seed))  # noqa: E731 (after tuning)
        if method.is_baseline:
            return [Stage("baseline", f"fit and rank {on} (test)", lambda: self.run_baseline(ds, method, seed, "test"),
                          lambda: self.baseline_done(ds, method, seed, "test"))]
        stages = [Stage("train", f"train {on}", lambda: self.train(ds, method, seed),
                        lambda: run().model_dir.is_dir() and bool(self.llm_config(ds, method, None, seed)))]
        for search in self.config.decoding.search:
            stages.append(Stage("evaluate" if search == "beam" else search,
                                f"decode and evaluate {on} (test, {search} search)",
                                lambda search=search: self.evaluate(run().path, "test", search),
                                lambda search=search: self.decoded(ds, run(), "test", search)))
        rows = self.config.diagnosis.rows
        if rows != 0:
            stages.append(Stage("diagnose", f"diagnose pruning of {on} (test)", lambda: self.diagnose(run().path),
                                lambda: self.diagnosed(run())))
        return stages

    # ------------------------------------------------------------ the work
    def prepare(self, ds: DatasetSpec) -> None:
        """Prepare the dataset (and sample its test rows) into OUTPUT/data/<name>, recording the options used."""
        from ..data import prepare as prepare_dataset
        from ..data import save_dataset
        from ..data.prepare import check_output_dir

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
        from ..semantic_ids import build_index

        build_index(self.dataset_dir(ds), **self.index_options(ds))

    def index_options(self, ds: DatasetSpec) -> dict[str, Any]:
        """The config's `bearrec index` options with their defaults filled in."""
        return {**INDEX_OPTIONS, **(ds.index or {})}

    def indexed(self, ds: DatasetSpec) -> bool:
        """True when semantic_ids.json is there, made with the config's options from this dataset; False when absent
        or made from another version of the dataset (redone); a ConfigError when made with other options."""
        from ..semantic_ids import INDEX_FILE

        path = self.dataset_dir(ds) / INDEX_FILE
        if not path.is_file():
            return False
        record = read_json_file(path, dict, f"delete {path} to compute it again")
        if record.get("dataset_fingerprint") != self.dataset(ds).fingerprint:
            return False
        made = {k: record.get(k) for k in INDEX_OPTIONS}
        if made != self.index_options(ds):
            raise ConfigError(f"{path} was made with other options ({made}); the config asks for "
                              f"{self.index_options(ds)}. Fix: delete it to compute it again (runs trained on it "
                              f"refuse the new one), or restore the config's datasets.{ds.name}.index.")
        return True

    def dataset(self, ds: DatasetSpec) -> Any:
        """The prepared dataset (loaded once per experiment)."""
        from ..data import load_dataset

        if ds.name not in self._datasets:
            self._datasets[ds.name] = load_dataset(self.dataset_dir(ds))
        return self._datasets[ds.name]

    def llm_config(self, ds: DatasetSpec, method: MethodSpec, cell: dict[str, Any] | None, seed: int) -> Any:
        """The TrainConfig of one LLM run (cell None: the selected one), checked against its run directory: one made
        with another config, or on another version of the dataset, is a ConfigError."""
        from ..train import check_run_config

        config = self.train_config(ds, method, self.selected(ds, method) if cell is None else cell, seed)
        check_run_config(config.output_dir, config, self.dataset(ds).fingerprint)
        return config

    def train(self, ds: DatasetSpec, method: MethodSpec, seed: int, cell: dict[str, Any] | None = None) -> Path:
        """Train (or resume) one LLM run unless its model is there."""
        from ..run_dir import RunDir
        from ..train import train

        config = self.llm_config(ds, method, cell, seed)
        run = RunDir(config.output_dir)
        if not run.model_dir.is_dir():
            train(config, resume=run.checkpoints_dir.is_dir())
        return run.path

    def decoded(self, ds: DatasetSpec, run: Any, split: str, search: str) -> bool:
        """Whether `split`'s metrics exist, of predictions of every row decoded with the experiment's beams."""
        from ..evaluate import predictions_are_current

        return run.artefact("metrics", split, search=search).is_file() and predictions_are_current(
            run.artefact("predictions", split, search=search), len(self.dataset(ds).split(split)),
            self.config.decoding.num_beams, search)

    def diagnosed(self, run: Any) -> bool:
        """Whether the diagnosis of the configured rows exists, made with the experiment's beams."""
        path = run.artefact("diagnosis", limit=self.config.diagnosis.rows)
        return path.is_file() and read_json_file(path).get("num_beams") == self.config.decoding.num_beams

    def evaluate(self, run_dir: Path, split: str, search: str = "beam") -> dict:
        from ..evaluate import evaluate

        d = self.config.decoding
        return evaluate(run_dir, split=split, num_beams=d.num_beams, batch_size=d.batch_size, search=search,
                        max_expansions=d.max_expansions)

    def diagnose(self, run_dir: Path) -> dict:
        from ..diagnose import diagnose_run

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
        from ..baselines import run_baseline

        args, kwargs = self._baseline_args(ds, method, seed, split, cell)
        return run_baseline(*args, **kwargs)

    def baseline_done(self, ds: DatasetSpec, method: MethodSpec, seed: int, split: str,
                      cell: dict[str, Any] | None = None) -> bool:
        """Whether run_baseline would find its work done (a folder of other settings is a ConfigError)."""
        from ..baselines import baseline_done

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
        from ..run_dir import RunDir

        seed = self.config.tuning.seed
        if method.is_baseline:
            return self.baseline_done(ds, method, seed, "valid", cell)
        run = RunDir(self.llm_config(ds, method, cell, seed).output_dir)
        return run.model_dir.is_dir() and self.decoded(ds, run, "valid", "beam")

    def cell_score(self, ds: DatasetSpec, method: MethodSpec, cell: dict[str, Any]) -> float | None:
        """The cell's validation score, if an earlier stage computed it."""
        from ..run_dir import RunDir

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
            missing = _cell_name(cells[scores.index(None)])
            raise ConfigError(f"{method.name} cell {missing} on {ds.name} has no validation score. Fix: run the "
                              "experiment again (its tuning stage computes it).")
        best = max(range(len(cells)), key=lambda i: (scores[i], -i))
        write_json(self.tuning_path(ds, method), {
            "metric": self.config.tuning.metric, "split": "valid", "seed": self.config.tuning.seed,
            "cells": [{"settings": c, "name": _cell_name(c), "score": s,
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
        from ..report import write_report

        title = self.config.report.title or f"{self.config.name}: {ds.name}"
        return write_report(self.final_runs(ds), self.report_dir(ds), title=title,
                            bootstrap_metric=self.config.report.bootstrap_metric)

    def write_results(self) -> Path:
        """results.md and results.json: each dataset's results table (from its report's summary.json) and tuning."""
        from ..io import atomic_open
        from ..report import results_markdown

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
                          + f"; selected {_cell_name(record['selected'])}.", ""]
            lines += [f"Report: {self.report_dir(ds) / 'report.html'}", ""]
        path = self.out / "results.md"
        with atomic_open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines))
        write_json(self.out / "results.json", everything)
        return path


# ---------------------------------------------------------------- running it

def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


class Progress:
    """One line per stage: stage i of N, what runs, time spent, and an estimate of the time left from the stages of
    the same kind run so far (the stages' own progress bars stay)."""

    def __init__(self, total: int, print_fn: Callable[[str], None] = print):
        self.total, self.print = total, print_fn
        self.started = time.perf_counter()
        self.seconds: dict[str, list[float]] = {}

    def estimate(self, remaining: list[Stage]) -> tuple[float, list[str]]:
        """Seconds the remaining stages may take (per kind, the median of that kind's stages run so far) and the
        kinds not timed yet, whose time the estimate leaves out."""
        left = sum(statistics.median(self.seconds[s.kind]) for s in remaining if s.kind in self.seconds)
        return left, sorted({s.kind for s in remaining if s.kind not in self.seconds})

    def line(self, index: int, stage: Stage, remaining: list[Stage]) -> str:
        spent = (time.perf_counter() - self.started) / 60
        left, untimed = self.estimate([stage, *remaining])
        eta = f"about {_minutes(left)} left" if not untimed else (
            f"over {_minutes(left)} left ({', '.join(untimed)} not timed yet)" if left >= 1 else "time left not known yet")
        return f"[stage {index}/{self.total} | {spent:.1f} min spent | {eta}] {stage.label}"

    def record(self, stage: Stage, seconds: float) -> None:
        self.seconds.setdefault(stage.kind, []).append(seconds)


def run_experiment(config: ExperimentConfig, output: str | Path | None = None, *,
                   print_fn: Callable[[str], None] = print) -> Path:
    """Run every stage not yet done (see the module docstring) and return OUTPUT/results.md."""
    experiment = Experiment(config, output)
    experiment.out.mkdir(parents=True, exist_ok=True)
    with _exclusive(experiment.out):
        return _run(experiment, print_fn)


class _exclusive:
    """OUTPUT/experiment.lock holding this process's id while it runs: a second experiment on the same folder (whose
    stages would write the same files) is refused; a lock left by a process that died is taken over."""

    def __init__(self, out: Path):
        self.path = out / "experiment.lock"

    def __enter__(self) -> None:
        import os

        if self.path.is_file():
            text = self.path.read_text().strip()
            pid = int(text) if text.isdigit() else None
            if pid is not None and pid != os.getpid() and _alive(pid):
                raise ConfigError(f"another bearrec experiment (process {pid}) is running in {self.path.parent}. "
                                  "Fix: wait for it to finish, or stop it, then run this one again.")
        self.path.write_text(str(os.getpid()))

    def __exit__(self, *exc: Any) -> None:
        self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _run(experiment: Experiment, print_fn: Callable[[str], None]) -> Path:
    """Every stage of the plan that is not done yet, with the progress lines; OUTPUT/results.md."""
    config = experiment.config
    write_json(experiment.out / "experiment.json", config.to_json())
    plan = experiment.stages()
    progress = Progress(len(plan), print_fn)
    for index, stage in enumerate(plan, start=1):
        if stage.done():
            print_fn(f"[stage {index}/{len(plan)}] {stage.label}: done earlier, skipped")
            continue
        print_fn(progress.line(index, stage, plan[index:]))
        token = CURRENT_STAGE.set((stage.kind, stage.label))
        start = time.perf_counter()
        try:
            stage.run()
        finally:
            CURRENT_STAGE.reset(token)
        progress.record(stage, time.perf_counter() - start)
    results = experiment.out / "results.md"
    print_fn(results.read_text(encoding="utf-8"))
    print_fn(f"experiment {config.name} finished in {(time.perf_counter() - progress.started) / 60:.1f} min: "
             f"{results}")
    return results


# `bearrec demo --quick`: the demo shrunk to a smoke test (a minute or two on a CPU).
DEMO_QUICK = ("datasets.ml100k.prepare.train_sample=200", "datasets.ml100k.test_sample=40",
              "train.max_valid_rows=40", "train.training.num_train_epochs=1", "diagnosis.rows=20",
              "methods.sasrec.n_epochs=2")
