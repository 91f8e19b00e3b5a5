"""The experiment config: its schema (datasets, methods, seeds, tuning, decoding, diagnosis, report), reading it from
YAML with every key checked, and building every run's settings once before anything runs."""
from __future__ import annotations

import itertools
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from ..baselines import BASELINES
from ..cli_args import per_row_metric
from ..errors import ConfigError
from ..methods import ObjectiveConfig
from ..searches import SEARCHES, SearchOptions, check_weight
from ..semantic_index import build_index

# The kinds of stage (the schedule names them) and the order of each seed's stages after tuning: a phase runs for every method before the next (evaluate: beam search;
# diagnose reads its lists and counts the entries above each positive, far cheaper than proving a top B), so the
# slow exact searches come last, those of the methods with masked scores first (about 100 expansions a row, against
# thousands under full scores).
FINAL_PHASES = {"baseline": 0, "train": 1, "evaluate": 2, "diverse": 3, "d3": 3, "igd": 3, "diagnose": 4, "exact": 5}
KINDS = ("prepare", "index", "tune", "select", *FINAL_PHASES, "report")


def _index_defaults() -> dict[str, Any]:
    """`bearrec index`'s options and their defaults: semantic_ids.build_index's keyword arguments."""
    import inspect

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
    # semantic IDs for runs with `item_kind: semantic_id`: `bearrec index` options (levels, codes, embeddings, seed)
    index: dict[str, Any] | None = None


@dataclass
class MethodSpec:
    """One method: its name in the tables (the key under `methods`), what it runs (`method`: a training objective's
    method name, sft, msl, bear, bear-sft, msl+ce..., or a baseline; default the name), its settings (dotted TrainConfig
    keys, or the baseline's settings) and a grid of settings tuned on validation. A name of its own lets one objective
    appear twice, e.g. `sid-sft: {method: sft, item_kind: semantic_id}` beside `sft`."""
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

    @property
    def score_mode(self) -> str | None:
        """How decoding scores tokens, "full" or "masked", read from the method's name (None for a baseline)."""
        return None if self.is_baseline else ObjectiveConfig.for_method(self.method).score_mode

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
    groups: int = 2  # diverse: groups of beams
    diversity_penalty: float = 1.0  # diverse: a token's cost per beam of an earlier group that chose it
    assistant: str | None = None  # d3: the baseline (a name under `methods`) whose fitted runs assist; None: none
    assistant_weights: list[float] = field(default_factory=lambda: [0.0, 0.1, 0.3, 0.5])  # d3: tuned on validation
    ig_weights: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0])  # igd: tuned on validation


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
class Schedule:
    """How the stages run. By default one at a time in this process, the first error stopping the experiment. With
    jobs > 1, a budget or limits, each stage runs in a process of its own, stopped at its limit (see isolated.py)."""
    jobs: int = 1  # stages of one phase (every method's training, ...) run this many at once
    budget_s: float | None = None  # the experiment ends within this many seconds of its start
    limits_s: dict[str, float] = field(default_factory=dict)  # the most seconds one stage of a kind takes
    reserve_s: float = 0  # what every stage but the reports leaves of the budget, for the reports
    optional: list[str] = field(default_factory=list)  # kinds run if time allows: a timeout is not a failure,
    optional_min_s: float = 0  # and they are skipped when less than this is left of the budget

    @property
    def isolated(self) -> bool:
        """Whether stages run in processes of their own (needed to stop one at its limit, or to run several)."""
        return self.jobs > 1 or self.budget_s is not None or bool(self.limits_s)


@dataclass
class ExperimentConfig:
    """A whole comparison (see the package docstring and docs/experiments.md)."""
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
    schedule: Schedule = field(default_factory=Schedule)
    source: str = "<dict>"  # the file it was read from (for messages)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def config_error(where: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"{where}: {problem} Fix: {fix}.")


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"objective": {"lam": 1}} -> {"objective.lam": 1}: dotted and nested settings mean the same."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _section(cls: type, raw: Any, where: str) -> Any:
    """cls(**raw) with an error naming the file, the section and the unknown key."""
    from dataclasses import fields

    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise config_error(where, f"must be a mapping, got {raw!r}.", f"write `{where.split(': ')[-1]}:` as key: value lines")
    names = [f.name for f in fields(cls)]
    unknown = [k for k in raw if k not in names]
    if unknown:
        raise config_error(where, f"unknown key {unknown[0]!r}; valid keys: {', '.join(names)}.", "check the spelling")
    return cls(**raw)


def _method(name: str, raw: Any, where: str) -> MethodSpec:
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise config_error(where, f"must map settings to values, got {raw!r}.", "write e.g. `bear: {objective.lam: 0.5}`")
    raw = dict(raw)
    runs = raw.pop("method", name)
    if not isinstance(runs, str) or not re.fullmatch(r"[\w.+@-]+", name):
        raise config_error(where, f"needs a plain name and a method name (got {name!r}, method {runs!r}).",
                    "e.g. `sid-sft: {method: sft, item_kind: semantic_id}`")
    grid = raw.pop("grid", None) or {}
    if not isinstance(grid, dict):
        raise config_error(f"{where}.grid", f"must map settings to lists of values, got {grid!r}.",
                    "write e.g. `grid: {objective.lam: [0.1, 1.0]}`")
    grid = flatten(grid)
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise config_error(f"{where}.grid.{key}", f"must be a non-empty list of values, got {values!r}.",
                        f"write e.g. `{key}: [0.1, 1.0]`")
    if runs not in BASELINES:
        try:
            ObjectiveConfig.for_method(runs)
        except ConfigError as e:
            raise config_error(where, f"{runs!r} is neither a baseline ({', '.join(BASELINES)}) nor a method: {e}",
                        "name a baseline or a method such as sft, msl, bear, direct, bear-sft, msl+ce (or give a "
                        "name of your own and `method: ...`)") from None
    settings = flatten(raw)
    for key in list(settings) + list(grid):
        place = f"{where}.{'grid.' if key in grid else ''}{key}"
        if key.split(".")[-1] in ("name", "base", "single_child_ce") and key.startswith("objective"):
            raise config_error(place, "is set by the method's name.",
                        "name the method instead (bear-sft for base sft, bear+ce for single_child_ce)")
        if key in RUN_KEYS:
            raise config_error(place, "is set by the experiment for every run.", RUN_KEYS_FIX)
    overlap = sorted(set(settings) & set(grid))
    if overlap:
        raise config_error(f"{where}.grid.{overlap[0]}", "is also set outside the grid.", "set it in one place")
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
        raise config_error(where, f"must be a mapping of settings, got {value!r}.", f"write e.g. `{example}`")
    return value


def parse_experiment(raw: dict[str, Any], source: str = "<dict>") -> ExperimentConfig:
    """An ExperimentConfig from the YAML's mapping, every section and key checked (errors name `source`)."""
    if not isinstance(raw, dict):
        raise config_error(source, "must hold a mapping at the top level.", "start from configs/experiments/office-tiny.yaml")
    raw = dict(raw)
    known = {"name", "datasets", "methods", "seeds", "output", "train", "tuning", "decoding", "diagnosis", "report",
             "schedule"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise config_error(source, f"unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(known))}.", "check the spelling")
    for key in ("name", "datasets", "methods"):
        if not raw.get(key):
            raise config_error(source, f"has no {key!r}.", "see configs/experiments/office-tiny.yaml for a complete example")
    if not isinstance(raw["name"], str) or not re.fullmatch(r"[\w.+-]+", raw["name"]):
        raise config_error(f"{source}: name", f"must be a plain name (letters, digits, . _ + -), got {raw['name']!r}.",
                    "e.g. name: office-tiny")
    if not isinstance(raw["datasets"], dict):
        raise config_error(f"{source}: datasets", "must map dataset names to their settings.",
                    "write e.g. `datasets: {office: {path: data/office}}`")
    datasets = []
    for name, spec in raw["datasets"].items():
        where = f"{source}: datasets.{name}"
        if not re.fullmatch(r"[\w.+-]+", str(name)):
            raise config_error(where, "is not a plain name (letters, digits, . _ + -).", "rename the dataset")
        spec = _mapping(spec, where, f"{name}: {{path: data/{name}}}")
        ds = _section(DatasetSpec, {"name": str(name), **spec}, where)
        ds.train = _mapping(ds.train, f"{where}.train", "train: {domain: office}")
        if ds.prepare is not None:
            ds.prepare = _mapping(ds.prepare, f"{where}.prepare", "prepare: {format: bear-csv, source: DIR}")
        if (ds.path is None) == (ds.prepare is None):
            raise config_error(where, "needs exactly one of `path` (a prepared dataset) and `prepare` (how to prepare it).",
                        "e.g. `path: data/office`, or `prepare: {format: bear-csv, source: DIR}`")
        if ds.prepare is not None and not {"format", "source"} <= set(ds.prepare):
            raise config_error(f"{where}.prepare", "needs `format` and `source` (as `bearrec prepare FORMAT SOURCE`).",
                        "e.g. `prepare: {format: movielens-100k, source: '-'}`")
        if ds.test_sample is not None and (not isinstance(ds.test_sample, int) or ds.test_sample < 1):
            raise config_error(f"{where}.test_sample", f"must be a positive integer, got {ds.test_sample!r}.", "or leave it out")
        if ds.test_sample is not None and ds.prepare is None:
            raise config_error(f"{where}.test_sample", "samples the test rows of a dataset the experiment prepares, not of "
                        "one given by `path`.", "give `prepare` instead of `path`, or leave test_sample out")
        if ds.index is not None:
            ds.index = _mapping(ds.index, f"{where}.index", "index: {levels: 3, codes: 32, embeddings: collaborative}")
            unknown = sorted(set(ds.index) - set(INDEX_OPTIONS))
            if unknown:
                raise config_error(f"{where}.index.{unknown[0]}", f"is not an option of `bearrec index`; valid: "
                            f"{', '.join(INDEX_OPTIONS)}.", "check the spelling")
        datasets.append(ds)
    methods_raw = raw["methods"]
    if isinstance(methods_raw, list):
        methods_raw = {str(m): {} for m in methods_raw}
    if not isinstance(methods_raw, dict):
        raise config_error(f"{source}: methods", "must list method names, or map them to their settings.",
                    "e.g. `methods: [sft, bear, popularity]`")
    methods = [_method(str(name), spec, f"{source}: methods.{name}") for name, spec in methods_raw.items()]
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                            for s in seeds) or len(set(seeds)) < len(seeds):
        raise config_error(f"{source}: seeds", f"must be a list of distinct integers, got {seeds!r}.", "e.g. seeds: [0, 1, 2]")
    train = _mapping(raw.get("train"), f"{source}: train", "train: {model: tiny}")
    for key in RUN_KEYS:
        for where, section in [("train", train)] + [(f"datasets.{d.name}.train", d.train) for d in datasets]:
            if key in section:
                raise config_error(f"{source}: {where}.{key}", "is set by the experiment for every run.", RUN_KEYS_FIX)
    if raw.get("output") is not None and not isinstance(raw["output"], str):
        raise config_error(f"{source}: output", f"must be a folder name, got {raw['output']!r}.", "e.g. output: runs/mine")
    config = ExperimentConfig(
        name=raw["name"], datasets=datasets, methods=methods, seeds=seeds, output=raw.get("output"),
        train=train, tuning=_section(Tuning, raw.get("tuning"), f"{source}: tuning"),
        decoding=_section(Decoding, raw.get("decoding"), f"{source}: decoding"),
        diagnosis=_section(Diagnosis, raw.get("diagnosis"), f"{source}: diagnosis"),
        report=_section(ReportSpec, raw.get("report"), f"{source}: report"),
        schedule=_section(Schedule, raw.get("schedule"), f"{source}: schedule"), source=source)
    if isinstance(config.decoding.search, str):
        config.decoding.search = [config.decoding.search]
    if not isinstance(config.decoding.search, list):
        raise config_error(f"{source}: decoding.search", f"must list search modes, got {config.decoding.search!r}.",
                    "e.g. search: [beam, exact]")
    bad = [s for s in config.decoding.search if s not in SEARCHES]
    if bad or not config.decoding.search:
        raise config_error(f"{source}: decoding.search", f"must list search modes among {', '.join(SEARCHES)}, got "
                    f"{config.decoding.search!r}.", "e.g. search: [beam, exact]")
    for key, value in (("decoding.num_beams", config.decoding.num_beams), ("decoding.batch_size",
                       config.decoding.batch_size), ("decoding.max_expansions", config.decoding.max_expansions)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise config_error(f"{source}: {key}", f"must be an integer >= 1, got {value!r}.", "e.g. 10")
    _check_variants(config, source)
    for key, value, least in (("tuning.seed", config.tuning.seed, None), ("diagnosis.rows", config.diagnosis.rows, 0),
                              ("diagnosis.max_expansions", config.diagnosis.max_expansions, 1),
                              ("diagnosis.batch_size", config.diagnosis.batch_size, 1)):
        if (value is None and key == "diagnosis.rows") or (isinstance(value, int) and not isinstance(value, bool)
                                                           and (least is None or value >= least)):
            continue
        raise config_error(f"{source}: {key}", f"must be an integer{'' if least is None else f' >= {least}'}, got "
                    f"{value!r}.", "e.g. 0" if least is not None else "e.g. 0")
    for key, value in (("tuning.metric", config.tuning.metric), ("report.bootstrap_metric",
                                                                 config.report.bootstrap_metric)):
        try:
            per_row_metric(value)
        except Exception:
            raise config_error(f"{source}: {key}", f"must be hr@K, ndcg@K or mrr@K, got {value!r}.", "e.g. ndcg@10") from None
        if int(value.split("@")[1]) > config.decoding.num_beams:
            raise config_error(f"{source}: {key}", f"{value} needs lists longer than the {config.decoding.num_beams} "
                        "recommended.", "lower K, or raise decoding.num_beams")
    _check_schedule(config.schedule, f"{source}: schedule")
    return config


def _check_variants(config: ExperimentConfig, source: str) -> None:
    """The settings of diverse beam search and D3: their ranges, and D3's assistant a baseline the config fits."""
    d = config.decoding
    try:
        SearchOptions(groups=d.groups, diversity_penalty=d.diversity_penalty).check()
    except ConfigError as e:
        raise config_error(f"{source}: decoding", str(e).split(" Fix:")[0], "e.g. groups: 2, diversity_penalty: 1.0") \
            from None
    if "diverse" in d.search and d.num_beams % d.groups:
        raise config_error(f"{source}: decoding.groups", f"{d.groups} groups do not divide the {d.num_beams} beams.",
                           "choose groups dividing num_beams")
    baselines = [m.name for m in config.methods if m.method == "sasrec"]
    if d.assistant is not None and d.assistant not in baselines:
        raise config_error(f"{source}: decoding.assistant", f"must name a SASRec baseline under `methods` ("
                           f"{', '.join(baselines) or 'none listed'}; D3's assistant scores items by logits, which "
                           f"popularity's counts are not), got {d.assistant!r}.", "e.g. assistant: sasrec")
    for key, search in (("assistant_weights", "d3"), ("ig_weights", "igd")):
        weights = getattr(d, key)
        if not isinstance(weights, list) or not weights:
            raise config_error(f"{source}: decoding.{key}", f"must list weights, got {weights!r}.",
                               f"e.g. {key}: [0.0, 0.1, 0.3]")
        for w in weights:
            try:
                check_weight(w, search)
            except ConfigError as e:
                raise config_error(f"{source}: decoding.{key}", f"holds {w!r}; {str(e).split(', got')[0]}.",
                                   f"e.g. {key}: [0.0, 0.1, 0.3]") from None


def _check_schedule(schedule: Schedule, where: str) -> None:
    """Every schedule value of the right type and range, kinds among the plan's (errors name the key)."""
    def number(value: Any, least: float, strict: bool = False) -> bool:
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and (value > least if strict else value >= least))

    if not isinstance(schedule.jobs, int) or not number(schedule.jobs, 1):
        raise config_error(f"{where}.jobs", f"must be an integer >= 1, got {schedule.jobs!r}.", "e.g. jobs: 3")
    if schedule.budget_s is not None and not number(schedule.budget_s, 0, strict=True):
        raise config_error(f"{where}.budget_s", f"must be seconds > 0, got {schedule.budget_s!r}.", "e.g. 3600, or leave it out")
    for key in ("reserve_s", "optional_min_s"):
        if not number(getattr(schedule, key), 0):
            raise config_error(f"{where}.{key}", f"must be seconds >= 0, got {getattr(schedule, key)!r}.", "e.g. 30")
    schedule.limits_s = limits = _mapping(schedule.limits_s, f"{where}.limits_s", "limits_s: {train: 300}")
    if not isinstance(schedule.optional, list):
        raise config_error(f"{where}.optional", f"must list kinds of stage, got {schedule.optional!r}.",
                    "e.g. optional: [diagnose, exact]")
    for key, kind in [(f"limits_s.{k}", k) for k in limits] + [("optional", k) for k in schedule.optional]:
        if kind not in KINDS:
            raise config_error(f"{where}.{key}", f"names no kind of stage ({kind!r}); kinds: {', '.join(KINDS)}.",
                        "check the spelling")
    for kind, value in limits.items():
        if not number(value, 0, strict=True):
            raise config_error(f"{where}.limits_s.{kind}", f"must be seconds > 0, got {value!r}.", "e.g. 300")


def cell_name(cell: dict[str, Any]) -> str:
    """A folder-safe name of a grid cell: "lam0.25-xi1.0" for {"objective.lam": 0.25, "objective.xi": 1.0}."""
    parts = []
    for key, value in cell.items():
        text = json.dumps(value) if not isinstance(value, str) else value
        parts.append(re.sub(r"[^\w.+]", "_", key.split(".")[-1] + text))
    return "-".join(parts)
