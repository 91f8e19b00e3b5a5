"""Per-token training objectives: SFT, MSL, BEAR (and its reference weighted form) and the direct one.

Every function takes one row of logits per label token, `logits (N, K)`, the target column
`targets (N,)` and an optional boolean `allowed (N, K)`, and returns the loss of each token (N,).
K is the whole vocabulary in the reference (dense) use, or the padded trie children of each token's
prefix in the training path (`gather_children`): the masked softmax and the top-B only ever look at
allowed columns, so both give the same numbers without a (tokens x vocabulary) mask.

Notation (method.md): p_t = P(y_t | y_<t, x), beta_t = the B-th largest probability of the step,
Delta_t = log beta_t - log p_t (> 0: pruned).
  SFT   -log p_t over the full vocabulary.
  MSL   -log p_t, softmax over the valid trie children only, at temperature tau.
  BEAR  base_t + lam * log sigmoid(Delta_t / xi), beta_t detached; minimising it pushes p_t above beta_t.
  BEAR weighted (reference implementation): w_t * CE_t with w_t = 1 + lam * sigmoid(-Delta_t / xi)
        detached. Since d/dtheta [xi * log sigmoid(Delta/xi)] = sigmoid(-Delta/xi) * dCE/dtheta (beta
        detached, dDelta = dCE), its gradient is that of CE_t + lam * xi * log sigmoid(Delta_t / xi):
        weighted(lam) has the gradient of bear(lam * xi), up to the 1 / sum(w) normalisation.
  direct  relaxed objective (3.1): -log sigmoid((log P(y_<=t|x) - log P(b^B_<=t|x)) / xi) per step.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import ConfigError


def _log_probs(logits: torch.Tensor, allowed: torch.Tensor | None, tau: float = 1.0) -> torch.Tensor:
    """Log-softmax in float32 over the allowed columns (the others get -inf) at temperature tau."""
    logits = logits.float()
    if allowed is None:
        return F.log_softmax(logits, dim=-1)
    return F.log_softmax((logits / tau).masked_fill(~allowed, float("-inf")), dim=-1)


def _target_log_prob(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p of each row's target; a target outside the allowed columns is an error, not a silent inf."""
    picked = log_probs.gather(1, targets.long().unsqueeze(1)).squeeze(1)
    if picked.numel() and torch.isneginf(picked).any():
        raise ConfigError("a target token is not among the allowed tokens of its step, so MSL/BEAR are infinite. "
                          "Fix: build the trie with the same tokenizer and template as the training rows.")
    return picked


def _log_threshold(log_probs: torch.Tensor, allowed: torch.Tensor | None, num_beams: int) -> torch.Tensor:
    """log beta: the num_beams-th largest allowed log-probability, or the smallest allowed one if fewer exist."""
    if num_beams < 1:
        raise ConfigError(f"num_beams must be at least 1, got {num_beams}.")
    k = min(num_beams, log_probs.shape[-1])
    kth = log_probs.topk(k, dim=-1).values[:, -1]
    count = torch.full_like(kth, log_probs.shape[-1]) if allowed is None else allowed.sum(-1)
    if allowed is None:
        smallest = log_probs.min(-1).values
    else:
        smallest = log_probs.masked_fill(~allowed, float("inf")).min(-1).values
    return torch.where(count >= num_beams, kth, smallest)


def sft_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each token over the full vocabulary: -log softmax(logits)[target]."""
    return -_target_log_prob(_log_probs(logits, None), targets)


def msl_loss(logits: torch.Tensor, targets: torch.Tensor, allowed: torch.Tensor | None,
             tau: float = 1.0) -> torch.Tensor:
    """Masked softmax loss: cross-entropy over the allowed (trie-valid) tokens only, at temperature tau."""
    if allowed is None:
        allowed = torch.ones_like(logits, dtype=torch.bool)
    return -_target_log_prob(_log_probs(logits, allowed, tau), targets)


def pruning_margin(logits: torch.Tensor, targets: torch.Tensor, allowed: torch.Tensor | None = None, *,
                   num_beams: int = 10, tau: float = 1.0, detach_threshold: bool = True
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(base CE_t, Delta_t = log beta_t - log p_t) under the base distribution (MSL if allowed else SFT)."""
    log_probs = _log_probs(logits, allowed, tau)
    log_p = _target_log_prob(log_probs, targets)
    log_beta = _log_threshold(log_probs, allowed, num_beams)
    if detach_threshold:
        log_beta = log_beta.detach()
    return -log_p, log_beta - log_p


def bear_loss(logits: torch.Tensor, targets: torch.Tensor, allowed: torch.Tensor | None = None, *,
              num_beams: int = 10, lam: float = 0.25, xi: float = 2.75, tau: float = 1.0,
              detach_threshold: bool = True) -> torch.Tensor:
    """BEAR per token: base_t + lam * log sigmoid((log beta_t - log p_t) / xi) (method.md, L_SFT + lam L_reg)."""
    ce, delta = pruning_margin(logits, targets, allowed, num_beams=num_beams, tau=tau,
                               detach_threshold=detach_threshold)
    return ce + lam * bear_regularizer(delta, xi)


def bear_regularizer(delta: torch.Tensor, xi: float) -> torch.Tensor:
    """L_reg per token: log sigmoid(Delta_t / xi), Delta_t = log beta_t - log p_t (method.md)."""
    return F.logsigmoid(delta / xi)


def bear_weights(logits: torch.Tensor, targets: torch.Tensor, allowed: torch.Tensor | None = None, *,
                 num_beams: int = 10, lam: float = 0.25, xi: float = 2.75, tau: float = 1.0
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(CE_t, detached w_t = 1 + lam * sigmoid((log p_t - log beta_t) / xi)) of the reference weighted form."""
    ce, delta = pruning_margin(logits, targets, allowed, num_beams=num_beams, tau=tau)
    return ce, (1.0 + lam * torch.sigmoid(-delta / xi)).detach()


def bear_weighted_loss(logits: torch.Tensor, targets: torch.Tensor, allowed: torch.Tensor | None = None, *,
                       num_beams: int = 10, lam: float = 0.25, xi: float = 2.75, tau: float = 1.0
                       ) -> torch.Tensor:
    """The reference implementation's form, per token: w_t * CE_t with w normalised to sum to one over the
    tokens with more than one valid child (the others contribute zero; summing gives the batch loss)."""
    ce, w = bear_weights(logits, targets, allowed, num_beams=num_beams, lam=lam, xi=xi, tau=tau)
    counts = (torch.full_like(ce, logits.shape[-1]) if allowed is None else allowed.sum(-1))
    w = torch.where(counts > 1, w, torch.zeros_like(w))
    return w / w.sum().clamp(min=1e-12) * ce


def direct_loss(step_log_probs: torch.Tensor, step_mask: torch.Tensor, log_thresholds: torch.Tensor, *,
                xi: float = 2.75) -> torch.Tensor:
    """Relaxed objective (3.1) per response step: -log sigmoid((log P(y_<=t|x) - log P(b^B_<=t|x)) / xi).

    `step_log_probs (R, T)`: log p of each response token (row = one response, left-aligned), `step_mask`
    marks real tokens, `log_thresholds (R, T)`: the cumulative log-prob of the B-th best prefix kept by beam
    search at each step (no gradient; -inf where fewer than B prefixes exist: the term is then 0).
    The product over steps of the relaxed indicators becomes a sum of log-sigmoids; returns (R, T), 0 off-mask.
    """
    cumulative = (step_log_probs * step_mask).cumsum(dim=1)
    margin = (cumulative - log_thresholds.detach().to(cumulative.dtype)) / xi
    return torch.where(step_mask, -F.logsigmoid(margin), torch.zeros_like(margin))


# ------------------------------------------------------------------------------------- training path
def gather_children(logits: torch.Tensor, targets: torch.Tensor, child_tokens: torch.Tensor,
                    child_valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits of each token's trie children (N, F), target column (N,)) from full logits (N, V).

    `child_tokens`/`child_valid` come from `ItemTrie.padded_children(nodes)` of each token's prefix node.
    Pass `child_valid` as `allowed` to the functions above: padded columns are masked out of the softmax
    and the top-B. A target that is not a child of its prefix is an error (trie/tokenizer mismatch).
    """
    gathered = logits.gather(1, child_tokens.to(logits.device))
    hit = (child_tokens.to(targets.device) == targets.unsqueeze(1)) & child_valid.to(targets.device)
    if hit.numel() and not bool(hit.any(1).all()):
        raise ConfigError("a label token is not a trie child of its prefix. Fix: build the trie with the same "
                          "tokenizer and template as the training rows (both use prompts.encode_responses).")
    return gathered, hit.float().argmax(1)


# ------------------------------------------------------------------------- the field: APAO and IGD
# APAO (arXiv 2603.02730): CE + beta * sum_t w_t L_t over the proper prefix lengths t of the target, w adaptive.
#   pointwise  L_t = mean over rows of -log P(y_<=t | x) / t / prefix_tau
#   pairwise   L_t = mean over rows of -log softmax_t / t, the softmax of the target's prefix score against sampled
#              catalog items' prefixes (log P / prefix_tau), those sharing a prefix masked, the rest scaled by
#              (V_t - 1) / (1 + valid negatives), V_t the catalog's number of distinct proper prefixes of length t
# IGD (arXiv 2506.13229): CE_t weighted by beta where the token's information gain is zero (its prefix has one
#   child: every item under the prefix is under the token), 1 elsewhere, normalised by the sum of the weights.
def by_row(values: torch.Tensor, is_label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, T) left-aligned per-row values of the label tokens (N,) in row-major order, and their (R, T) mask."""
    step = is_label.long().cumsum(1) - 1
    rows, cols = is_label.nonzero(as_tuple=True)
    width = int(is_label.sum(1).max()) if is_label.numel() else 0
    out = values.new_zeros((is_label.shape[0], width))
    out = out.index_put((rows, step[rows, cols]), values)
    mask = torch.zeros(out.shape, dtype=torch.bool, device=out.device)
    mask[rows, step[rows, cols]] = True
    return out, mask


def token_log_probs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Full-vocabulary log p of each target token (N,), float32: the SFT base's scores."""
    return _target_log_prob(_log_probs(logits, None), targets)


def prefix_means(per_row: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(S,) the mean of each column over its valid rows (0 for a column with none)."""
    total = torch.where(valid, per_row, torch.zeros_like(per_row)).sum(0)
    return total / valid.sum(0).clamp(min=1)


def apao_adaptive_weights(prefix_losses: torch.Tensor, eta: float, eps: float = 1e-12) -> torch.Tensor:
    """APAO's weights over prefix lengths, no gradient: w proportional to L_t * exp(eta * L_t), summing to one (L_t
    normalised by their sum first, uniform if that sum is 0)."""
    base = prefix_losses.detach()
    total = base.sum()
    if float(total.abs()) < eps:
        w = torch.full_like(base, 1.0 / max(base.numel(), 1))
    else:
        w = base / (total + eps)
    w = w * torch.exp(eta * base)
    return w / (w.sum() + eps)


def apao_pointwise_prefix_losses(token_lp: torch.Tensor, mask: torch.Tensor, prefix_tau: float = 1.0
                                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """((R, S) -log P(y_<=t | x) / t / prefix_tau, (R, S) valid) for t = 1..S = T - 1: every proper prefix of each
    row's response (token_lp (R, T) from `by_row`, EOS last)."""
    cumulative = torch.where(mask, token_lp, torch.zeros_like(token_lp)).cumsum(1)[:, :-1]
    lengths = torch.arange(1, cumulative.shape[1] + 1, device=token_lp.device, dtype=cumulative.dtype)
    return -cumulative / lengths / prefix_tau, mask[:, 1:]


def apao_pairwise_prefix_losses(token_lp: torch.Tensor, mask: torch.Tensor, negative_lp: torch.Tensor,
                                negative_nodes: torch.Tensor, positive_nodes: torch.Tensor,
                                prefix_counts: torch.Tensor, prefix_tau: float = 1.0
                                ) -> tuple[torch.Tensor, torch.Tensor]:
    """((R, S) -log softmax of the target's prefix against the negatives' / t, (R, S) valid) for t = 1..S.

    `token_lp`/`mask` (R, S + 1): the target's token log-probs by row; `negative_lp` (R, K, S): the negatives' token
    log-probs; `negative_nodes`/`positive_nodes`: the trie node of each prefix (-1 past the item's end). A negative
    counts at t where it has a proper prefix that long, unlike the target's and every earlier negative's."""
    k = negative_nodes.shape[1]
    positive = torch.where(mask, token_lp, torch.zeros_like(token_lp)).cumsum(1)[:, :-1]  # (R, S)
    negative = negative_lp.cumsum(2)  # (R, K, S); entries past an item's end are masked below
    same = negative_nodes[:, :, None, :] == negative_nodes[:, None, :, :]  # (R, K, K, S): [j, i] j's prefix is i's
    earlier = torch.ones(k, k, dtype=torch.bool, device=same.device).tril(-1)  # i < j
    repeated = (same & earlier[None, :, :, None]).any(2)
    valid = (negative_nodes >= 0) & (negative_nodes != positive_nodes[:, None, :]) & ~repeated
    count = 1 + valid.sum(1)  # (R, S): the target and its valid negatives, as the authors count
    log_scale = torch.log((prefix_counts.to(positive.dtype) - 1).clamp(min=0) / count)  # -inf: no other prefix
    z_pos = positive / prefix_tau
    z_neg = (negative / prefix_tau).masked_fill(~valid, float("-inf")) + log_scale[:, None, :]
    log_denominator = torch.logsumexp(torch.cat([z_pos[:, None, :], z_neg], dim=1), dim=1)
    lengths = torch.arange(1, positive.shape[1] + 1, device=positive.device, dtype=positive.dtype)
    return (log_denominator - z_pos) / lengths, mask[:, 1:]


def igd_weights(num_children: torch.Tensor, beta: float) -> torch.Tensor:
    """IGD's token weights: beta where the prefix has a single child (zero information gain), 1 elsewhere."""
    return torch.where(num_children > 1, torch.ones_like(num_children, dtype=torch.float32),
                       torch.full_like(num_children, beta, dtype=torch.float32))
