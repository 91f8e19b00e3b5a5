"""The searches a run can decode with, and the settings of beam search's variants (light: no torch import).

- "beam": trie-constrained beam search; "exact": the k most probable items of the catalog, certified;
- "diverse": diverse beam search, `groups` groups of beams kept apart by `diversity_penalty`;
- "d3": D3's scores (ghost tokens left out), with an ID-based model's scores mixed in when an assistant is given;
- "igd": IGD's decoding, each token's log-prob scaled down by its information gain over the catalog.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Sequence

from .errors import ConfigError

if TYPE_CHECKING:  # `import bearrec` loads neither numpy nor torch
    import numpy as np

VARIANTS = ("diverse", "d3", "igd")  # beam search's variants: each a row of its own in the report
SEARCHES = ("beam", "exact", *VARIANTS)


def check_search(search: Any) -> str:
    """`search` when it is one of SEARCHES, else a ConfigError."""
    if search not in SEARCHES:
        raise ConfigError(f"search must be one of {', '.join(SEARCHES)}, got {search!r}. Fix: e.g. search=\"exact\".")
    return search


class ItemScorer(Protocol):
    """An ID-based model's scores over its catalog, one row per history: D3's assistant (bearrec.baselines.load_scorer
    gives one)."""

    item_ids: list[str]

    def score(self, histories: Sequence[Sequence[str]]) -> "np.ndarray": ...


@dataclass(frozen=True)
class SearchOptions:
    """The settings of beam search's variants: diverse beam search's groups and penalty; D3's assistant (None: D3
    without one), its weight, and the name predictions record it by (its run directory); IGD's scaling weight."""

    groups: int = 2
    diversity_penalty: float = 1.0
    assistant: ItemScorer | None = None
    assistant_weight: float = 0.0
    assistant_name: str | None = None
    ig_weight: float = 0.5

    def facts(self, search: str) -> dict[str, Any]:
        """What a predictions row of `search` records of these settings (a changed one makes the file stale)."""
        if search == "diverse":
            return {"groups": self.groups, "diversity_penalty": self.diversity_penalty}
        if search == "d3":
            helped = self.assistant is not None and self.assistant_weight > 0
            return {"assistant": self.assistant_name if helped else None,
                    "assistant_weight": self.assistant_weight if helped else 0.0}
        if search == "igd":
            return {"ig_weight": self.ig_weight}
        return {}

    def check(self) -> None:
        """ConfigError for a setting out of range."""
        if isinstance(self.groups, bool) or not isinstance(self.groups, int) or self.groups < 1:
            raise ConfigError(f"groups must be an integer >= 1, got {self.groups!r}. Fix: e.g. groups=2.")
        if isinstance(self.diversity_penalty, bool) or not isinstance(self.diversity_penalty, (int, float)) \
                or self.diversity_penalty < 0:
            raise ConfigError(f"the diversity penalty must be a number >= 0, got {self.diversity_penalty!r}. "
                              "Fix: e.g. 1.0.")
        check_weight(self.assistant_weight)
        check_weight(self.ig_weight, "igd")


# the variants' weights: what an error calls each, and whether it may be 1 (D3's assistant may not: the LLM would be
# ignored; IGD's scaling may: past 1 a decisive token's log-prob would turn positive)
WEIGHTS = {"d3": ("the assistant weight", False), "igd": ("the IG weight", True)}


def check_weight(weight: Any, search: str = "d3") -> None:
    """ConfigError unless `weight` is a number in [0, 1) (D3's assistant) or [0, 1] (IGD's scaling)."""
    what, one = WEIGHTS[search]
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (
            0 <= weight <= 1 if one else 0 <= weight < 1):
        raise ConfigError(f"{what} must be a number in [0, 1{']' if one else ')'}, got {weight!r}. Fix: e.g. 0.1; "
                          "0 decodes with the LLM alone.")
