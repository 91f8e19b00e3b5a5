"""What a method declaration holds: an objective (a training loss over the item trie) or a baseline (no LLM)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol

if TYPE_CHECKING:
    import torch

SCORE_MODES = ("full", "masked")  # decoding's softmax: over the vocabulary, or over the trie's valid children


@dataclass
class Negatives:
    """Catalog items sampled for each row and scored under its prompt, as prefixes on the item trie (apao-pairwise).

    S is the batch's longest response less one: its proper prefix lengths t = 1..S (column t - 1)."""

    log_probs: "torch.Tensor"       # (R, K, S) full-softmax log p of each negative's t-th token after the row's prompt
    nodes: "torch.Tensor"           # (R, K, S) the trie node after each negative's first t tokens, -1 past its end
    positive_nodes: "torch.Tensor"  # (R, S) the same for the row's own target (-1 past its end)
    prefix_counts: "torch.Tensor"   # (S,) how many distinct proper prefixes of length t the catalog has


@dataclass
class LabelTokens:
    """One batch's label tokens, as every objective's loss reads them (N label tokens, in row-major order).

    `child_*` are None for objectives that do not read the trie (`Objective.reads_trie` False)."""

    logits: "torch.Tensor"                      # (N, V) full-vocabulary logits of each label token
    targets: "torch.Tensor"                     # (N,) the label token ids
    is_label: "torch.Tensor"                    # (R, L) where the label tokens sit in the batch's rows
    child_logits: "torch.Tensor | None" = None  # (N, F) logits of each token's trie children, padded
    child_target: "torch.Tensor | None" = None  # (N,) the label's column among its children
    child_valid: "torch.Tensor | None" = None   # (N, F) which of the F columns are real children
    log_thresholds: "torch.Tensor | None" = None  # (R, T) beam search's B-th prefix log-prob per step (direct)
    negatives: Negatives | None = None  # sampled catalog items scored under each row's prompt (needs_negatives)


class Settings(Protocol):
    """The hyperparameters a loss reads: the fields of a config's `objective:` section (ObjectiveConfig)."""

    name: str
    num_beams: int
    lam: float
    xi: float
    tau: float
    weighted: bool
    detach_threshold: bool
    base: str
    single_child_ce: bool
    params: dict

    def settings(self) -> Any: ...


# A batch loss: the SUM over label tokens (the trainer divides by the token count).
LossFn = Callable[[LabelTokens, Settings], "torch.Tensor"]


@dataclass(frozen=True)
class Objective:
    """A training objective: its name, how decoding must score to match it, and its loss."""

    name: str
    summary: str                     # one line: what it optimises (for --help and docs)
    score_mode: str                  # "full" or "masked": decoding's scores under its own base
    loss: LossFn
    takes_base: bool = False         # whether objective.base=sft may put it on the SFT base (method NAME-sft)
    reads_trie: bool = True          # whether its loss reads each token's trie children
    needs_beam_thresholds: bool = False  # whether each batch needs a beam search first (the direct objective)
    # whether each batch needs catalog items sampled per row and scored under its prompt (LabelTokens.negatives);
    # its params then hold num_negatives, the number per row (apao-pairwise)
    needs_negatives: bool = False
    aliases: tuple[str, ...] = ()
    # a dataclass of the objective's own hyperparameters with their defaults, set as objective.params.KEY and read in
    # its loss as `o.settings()` (None: it has none beyond ObjectiveConfig's shared ones)
    params: type | None = None

    def __post_init__(self) -> None:
        if self.score_mode not in SCORE_MODES:
            raise ValueError(f"score_mode {self.score_mode!r} is not one of {SCORE_MODES}")


@dataclass(frozen=True)
class Baseline:
    """A non-LLM recommender, trained and reported beside the objectives (bearrec.baselines fits it)."""

    name: str
    summary: str
    aliases: tuple[str, ...] = ()
