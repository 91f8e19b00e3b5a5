"""The registry of methods: every objective and baseline, declared once, in report order.

A method name is NAME[-BASE][+ce]: an objective (or a baseline), optionally put on the SFT base (`bear-sft`), and
`+ce` for a masked objective with the single-child cross-entropy (`msl+ce`). Everything that names methods (the
config, the experiment runner, the report's order, the bench scripts) reads it from here.
Adding an objective: write methods/NAME.py with its loss and `OBJECTIVE = Objective(...)`, and add it below.
"""
from __future__ import annotations

from typing import Iterator

from ..errors import ConfigError
from . import apao, bear, direct, igd, msl, sft
from .spec import Baseline, Objective

BASELINES: tuple[Baseline, ...] = (
    Baseline("popularity", "the most frequent training targets"),
    Baseline("sasrec", "SASRec, a self-attentive sequential recommender (cornac)"),
)
OBJECTIVES: tuple[Objective, ...] = (
    sft.OBJECTIVE,
    msl.OBJECTIVE,
    direct.OBJECTIVE,
    bear.OBJECTIVE,
    apao.OBJECTIVE,
    apao.PAIRWISE,
    igd.OBJECTIVE,
)
BASES = ("msl", "sft")  # the base loss an objective with takes_base adds its term to (msl: the reference's)


def objective_names() -> tuple[str, ...]:
    return tuple(o.name for o in OBJECTIVES)


def baseline_names() -> tuple[str, ...]:
    return tuple(b.name for b in BASELINES)


def _canonical(name: str, entries: tuple[Objective, ...] | tuple[Baseline, ...]) -> str | None:
    for entry in entries:
        if name == entry.name or name in entry.aliases:
            return entry.name
    return None


def get_objective(name: str) -> Objective:
    """The objective called `name` (or one of its aliases); ConfigError naming the known ones otherwise."""
    found = _canonical(name, OBJECTIVES)
    if found is None:
        raise ConfigError(f"objective.name={name!r} is unknown. Fix: use one of {', '.join(objective_names())}.")
    return next(o for o in OBJECTIVES if o.name == found)


def is_baseline(method: str) -> bool:
    return _canonical(method, BASELINES) is not None


def parse_method(method: str) -> tuple[str, str | None, bool]:
    """(objective, base or None, single_child_ce) of a method name NAME[-BASE][+ce]; ConfigError if it is none."""
    plus = method.endswith("+ce")
    stem = method[:-3] if plus else method
    for objective in sorted(OBJECTIVES, key=lambda o: -len(o.name)):  # the longest name first: "apao-pairwise"
        for name in (objective.name, *objective.aliases):
            if stem == name:
                return objective.name, None, plus
            if stem.startswith(name + "-") and stem[len(name) + 1:] in BASES:
                return objective.name, stem[len(name) + 1:], plus
    raise ConfigError(f"method {method!r} is not of the form NAME[-BASE][+ce] with NAME one of "
                      f"{', '.join(objective_names())} and BASE one of {', '.join(BASES)} (e.g. bear, bear-sft, "
                      "msl+ce). Fix: name a registered objective, its base and +ce once.")


def score_mode(objective: str, base: str = "msl") -> str:
    """How decoding must score tokens to match training: the objective's own mode, or full on the SFT base."""
    return "full" if get_objective(objective).score_mode == "full" or base == "sft" else "masked"


def method_name(objective: str, base: str = "msl", single_child_ce: bool = False) -> str:
    """The name a run is reported under: the objective, its base where that is not MSL ("bear-sft"), and "+ce" with
    single_child_ce where the scores are masked ("msl+ce")."""
    stem = objective if base == "msl" else f"{objective}-{base}"
    return stem + ("+ce" if single_child_ce and score_mode(objective, base) == "masked" else "")


def variants(objective: Objective) -> Iterator[str]:
    """The method names an objective is reported under, in report order: NAME, NAME+ce, NAME-sft."""
    yield objective.name
    if objective.score_mode == "masked":
        yield objective.name + "+ce"
    if objective.takes_base:
        yield objective.name + "-sft"


def report_order() -> tuple[str, ...]:
    """Every method name in the order reports list them: the baselines, then each objective's variants."""
    return baseline_names() + tuple(v for o in OBJECTIVES for v in variants(o))


def order_key(method: str) -> tuple[int, str]:
    """Sort key of a method name in reports: the registered ones in report order, then the others alphabetically."""
    order = report_order()
    return (order.index(method) if method in order else len(order), method)
