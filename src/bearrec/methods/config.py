"""The `objective:` section of a training config: which registered objective, its base, and its hyperparameters."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from dataclasses import fields as dataclass_fields  # for_method's **fields hides the name
from typing import Any

from ..config_checks import check_fields, check_range
from ..errors import ConfigError
from .registry import BASES, OBJECTIVES, get_objective, method_name, parse_method, score_mode


@dataclass
class ObjectiveConfig:
    """Which loss to train with and its hyperparameters (method.md; the paper's Toy run: B=10, lam=.25, xi=2.75)."""

    name: str = "sft"
    num_beams: int = 10
    lam: float = 0.25
    xi: float = 2.75
    tau: float = 1.0
    weighted: bool = False  # bear only: the reference implementation's detached-weight form
    detach_threshold: bool = True
    # bear and direct only: "msl" (the reference implementation) or "sft" (the paper's L_SFT + lam L_reg:
    # full-vocabulary cross-entropy, decoded with full scores; the pruning margin is the same, see losses.py)
    base: str = "msl"
    # masked objectives: add the full-vocabulary CE of every token whose trie prefix has one child. MSL gives those
    # tokens no gradient (p = 1), so a model trained from scratch learns only from the branching tokens and, at a
    # high learning rate, stops reading its prompt (docs/results.md). Masked decoding scores are unchanged by it
    # (p = 1). The full-softmax objectives (sft, an sft base) already give every token that CE: no change there.
    single_child_ce: bool = False
    # the hyperparameters an objective declares of its own (`Objective.params`, a dataclass), e.g. objective.params.eta
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_fields(self, "objective.")
        declared = get_objective(self.name)  # a ConfigError naming the registered objectives
        self.settings()  # its own hyperparameters, checked by their dataclass
        if self.params and declared.params is None:
            raise ConfigError(f"objective.params: the {self.name} objective takes no params of its own, got "
                              f"{sorted(self.params)}. Fix: remove objective.params.")
        check_range("objective.num_beams", self.num_beams, self.num_beams >= 1, "an integer >= 1", 10)
        for key, example in (("xi", 2.75), ("tau", 1.0)):
            value = getattr(self, key)
            check_range(f"objective.{key}", value, 0 < value < math.inf, "> 0 and finite", example)
        check_range("objective.lam", self.lam, 0 <= self.lam < math.inf, ">= 0 and finite", 0.25)
        if self.weighted and self.name != "bear":
            raise ConfigError("objective.weighted applies to the bear objective only. Fix: set objective.name=bear.")
        if self.base not in BASES:
            raise ConfigError(f"objective.base={self.base!r} is unknown. Fix: use one of {', '.join(BASES)}.")
        if self.base != "msl" and not get_objective(self.name).takes_base:
            names = sorted(o.name for o in OBJECTIVES if o.takes_base)
            takes = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
            raise ConfigError(f"objective.base applies to {takes} only (the {self.name} objective is its own "
                              "base). Fix: leave objective.base unset.")
        if self.base == "sft" and (self.weighted or float(self.tau) != 1.0):
            raise ConfigError("objective.base=sft takes neither objective.weighted (the reference's re-weighting of "
                              "MSL) nor objective.tau (the masked softmax's temperature). Fix: leave both unset, or "
                              "use objective.base=msl.")

    def settings(self) -> Any:
        """The objective's own hyperparameters (its `Objective.params` dataclass, built from `params` and checked), or
        None for an objective that declares none."""
        declared = get_objective(self.name).params
        if declared is None:
            return None
        known = {f.name for f in fields(declared)}
        for key in self.params:
            if key not in known:
                raise ConfigError(f"unknown key objective.params.{key} of the {self.name} objective. Valid keys: "
                                  f"{', '.join(sorted(known))}. Fix: check the spelling, or remove the key.")
        made = declared(**self.params)
        check_fields(made, "objective.params.")
        return made

    @classmethod
    def for_method(cls, method: str, **fields: Any) -> "ObjectiveConfig":
        """The objective of a method name (`method`'s inverse: "bear", "bear-sft", "msl+ce"), with other fields."""
        if {"name", "base", "single_child_ce"} & set(fields):
            raise ConfigError(f"method {method!r} is given with one of its parts (name, base, single_child_ce) as a "
                              "field too. Fix: name the objective, its base and +ce once, in the method name.")
        known = [f.name for f in dataclass_fields(cls)]
        for key in fields:
            if key not in known:
                raise ConfigError(f"unknown key objective.{key}. Valid keys: {', '.join(known)}. Fix: check the "
                                  "spelling, or remove the key.")
        name, base, plus = parse_method(method)
        return cls(name=name, **({"base": base} if base else {}), **({"single_child_ce": True} if plus else {}),
                   **fields)

    @property
    def method(self) -> str:
        """The name a run is reported under: the objective, its base where that is not MSL ("bear-sft"), and
        "+ce" with single_child_ce ("msl+ce")."""
        return method_name(self.name, self.base, self.single_child_ce)

    @property
    def score_mode(self) -> str:
        """How decoding must score tokens to match training: full softmax for SFT (and an SFT base), else masked."""
        return score_mode(self.name, self.base)
