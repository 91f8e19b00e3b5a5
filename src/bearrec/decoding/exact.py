"""Exact top-K over the whole catalog by best-first search on the trie, and teacher-forced sequence scoring.

A prefix's log-probability bounds every completion below it (token log-probs are <= 0), so popping
trie nodes best first from a priority queue emits complete items in exact order of probability: when
a complete node is at the top of the queue, nothing unexpanded can beat it. Nodes of many prompts are
expanded together in one forward.

A node is expanded only after its parent, so with attention that takes a custom 4-D mask (sdpa, eager)
each prompt keeps one cache row: expanding a node feeds its last token only, as a new column of its
prompt's row that attends to the prompt and to the columns of the node's ancestors. Otherwise (flash
attention) an expansion re-runs the node's prefix tokens on a copy of its prompt's cached KV.

Under 'masked' scores a single child has probability 1, so single-child chains (a title's tokens once its prefix
singles it out) cost nothing: a node whose path below never branches is pushed as the complete item it leads to,
with no model call, and expanding a node whose only child has children of its own feeds the whole chain in one
call, one column per node, scoring the children of its last node. Under 'full' scores each token of a chain lowers
the score, and best-first search prunes most of a long chain, so nodes are expanded one by one.

A step expands each prompt's `nodes_per_step` best queued nodes, passing over complete items that a pending
expansion's children may still outrank (they are emitted once nothing pending can). The default of 32 is measured
(bench/exact_cost_probe.py, docs/benchmarks.md): on SmolLM2 under full scores, proving a top 10 takes ~7,000
expansions, and 32 per step took 5.8x less time than 8 (per-forward overhead dominates), with no wasted expansion;
larger steps gain little there and waste expansions on a small model. Steps cannot usefully grow with the work done:
the nodes a proof needs are found level by level, so a long title takes as many steps as it has tokens whatever their
size.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..errors import ConfigError, DataError
from ..trie import ItemTrie
from .common import (Hypothesis, cache_kwarg, check_score_mode, child_log_probs, custom_mask, extend, growing_cache,
                     hypotheses, output_cache, positions_from_mask, prefill, prepare_inputs, tree_attention)


@dataclass
class ExactResult:
    """The k most probable catalog entries of one prompt, best first; certified if provably exact."""

    items: list[Hypothesis]
    certified: bool
    expansions: int


def _select_cache(model: Any, cache: Any, rows: torch.Tensor) -> Any:
    """A fresh DynamicCache holding the given batch rows of `cache` (which stays untouched)."""
    from transformers import DynamicCache

    data = [(layer.keys.index_select(0, rows), layer.values.index_select(0, rows)) for layer in cache.layers]
    return DynamicCache(data, config=model.config)


class _NodeColumns:
    """Tree-attention expansions: each prompt's cache row holds one column per expanded node (see module doc)."""

    def __init__(self, model: Any, cache: Any, trie: ItemTrie, attention_mask: torch.Tensor,
                 prompt_len: torch.Tensor):
        self.model, self.cache, self.trie, self.prompt_len = model, growing_cache(cache), trie, prompt_len
        self.prompt_mask = attention_mask.bool()
        self.cols: list[dict[int, list[int]]] = [{0: []} for _ in range(attention_mask.shape[0])]
        self.width = 0  # generated columns in every row so far

    def expand(self, batch_p: list[int], chains: list[list[int]]) -> torch.Tensor:
        """Next-token logits after each node of each (prompt, chain): one new column per node in its prompt's row,
        in the order of the chains and of their nodes."""
        P, W, dev = self.prompt_mask.shape[0], self.prompt_mask.shape[1], self.prompt_mask.device
        slot = [0] * P
        qp, qi, nodes, mp, mq, mc = [], [], [], [], [], []
        for p, chain in zip(batch_p, chains):
            anc = self.cols[p][int(self.trie.parent[chain[0]])]
            for n in chain:
                i = slot[p]
                slot[p] += 1
                anc = anc + [self.width + i]
                self.cols[p][n] = anc
                qp.append(p), qi.append(i), nodes.append(n)
                mp += [p] * len(anc)
                mq += [i] * len(anc)
                mc += anc
        Q = max(slot)
        qp_t = torch.tensor(qp, device=dev)
        qi_t = torch.tensor(qi, device=dev)
        nodes_t = torch.tensor(nodes, device=dev)
        ids = torch.zeros(P, Q, dtype=torch.long, device=dev)
        ids[qp_t, qi_t] = self.trie.token[nodes_t]
        pos = self.prompt_len[:, None].expand(P, Q).clone()
        pos[qp_t, qi_t] += self.trie.depth[nodes_t] - 1
        gen = torch.zeros(P, Q, self.width + Q, dtype=torch.bool, device=dev)
        gen[torch.tensor(mp, device=dev), torch.tensor(mq, device=dev), torch.tensor(mc, device=dev)] = True
        mask = custom_mask(self.model, torch.cat([self.prompt_mask[:, None, :].expand(P, Q, W), gen], 2))
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                         **{cache_kwarg(self.model): self.cache})
        self.cache = output_cache(out)
        self.width += Q
        return out.logits[qp_t, qi_t].float()


class _Frontier:
    """One prompt's best-first queue, its emitted results and the k best complete scores seen (for pruning)."""

    def __init__(self, k: int):
        self.k = k
        self.heap: list[tuple[float, int]] = []  # (-score, node)
        self.results: list[tuple[float, int]] = []
        self.best_complete: list[float] = []  # min-heap of the k best complete scores discovered
        self.expansions = 0
        self.expanded: set[int] = set()  # nodes whose children are scored (an item among them may still be queued)

    def floor(self) -> float:
        """No completion scoring below this can enter the top k any more."""
        return self.best_complete[0] if len(self.best_complete) >= self.k else float("-inf")

    def push(self, score: float, node: int, complete: bool) -> None:
        if score < self.floor():
            return
        if complete:
            heapq.heappush(self.best_complete, score)
            if len(self.best_complete) > self.k:
                heapq.heappop(self.best_complete)
        heapq.heappush(self.heap, (-score, node))


@torch.no_grad()
def exact_top_k(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, trie: ItemTrie,
                k: int, *, score: str = "full", max_expansions: int = 2000,
                nodes_per_step: int = 32) -> list[ExactResult]:
    """For each left-padded prompt, the k catalog entries of highest P(y|x), best first (see module doc).

    `max_expansions` bounds the expansions per prompt (a node, or a single-child chain, scored in one model call);
    when it is hit, the best entries found so far are returned with certified=False. `nodes_per_step` nodes per
    prompt are expanded per forward (fewer forwards, at the cost of a few speculative expansions).
    """
    check_score_mode(score)
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}.")
    input_ids, attention_mask, trie = prepare_inputs(model, input_ids, attention_mask, trie)
    dev = input_ids.device
    P = input_ids.shape[0]
    if P == 0:
        return []
    has_items = (trie.item_counts(torch.arange(trie.num_nodes, device=dev)) > 0).tolist()
    has_kids = (trie.num_children(torch.arange(trie.num_nodes, device=dev)) > 0).tolist()
    # chains only under 'masked' scores, where their tokens cost nothing: under 'full' each token lowers the score,
    # and best-first search would prune most of a long chain that taking it whole evaluates anyway
    masked = score == "masked"
    only_child = trie.only_child.tolist() if masked else [-1] * trie.num_nodes
    chain_leaf = trie.chain_leaf.tolist() if masked else None
    prompt_len = attention_mask.long().sum(1)
    logits, cache = prefill(model, input_ids, attention_mask)
    columns = _NodeColumns(model, cache, trie, attention_mask, prompt_len) if tree_attention(model) else None
    if columns is not None:
        cache = None  # the columns hold their own growing copy
    fronts = [_Frontier(k) for _ in range(P)]
    # one row of `logits` per evaluated column: the prompt it belongs to, the node whose children it scores, and
    # whether it is its chain's last (earlier ones score the chain's own next token)
    col_p = torch.arange(P, device=dev)
    col_node = torch.zeros(P, dtype=torch.long, device=dev)
    col_chain = torch.arange(P, device=dev)
    last = torch.ones(P, dtype=torch.bool, device=dev)
    base = torch.zeros(P, device=dev)  # score of each chain's first node
    while True:
        tokens, valid = trie.padded_children(col_node)
        lp = child_log_probs(logits, tokens, valid, score)
        # a chain's last node scores its first node plus the log-prob of each token after it
        inner = ~last
        base = base.index_add(0, col_chain[inner], lp[inner, 0])
        rows = last.nonzero(as_tuple=True)[0]
        cand = base[col_chain[rows]][:, None] + lp[rows]
        child = trie.step(col_node[rows][:, None].expand_as(tokens[rows]), tokens[rows])
        r, c = valid[rows].nonzero(as_tuple=True)
        for p, s, n in zip(col_p[rows][r].tolist(), cand[r, c].tolist(), child[r, c].tolist()):
            if s > float("-inf"):
                if chain_leaf is not None and chain_leaf[n] >= 0:
                    n = chain_leaf[n]  # masked: every token below has probability 1
                fronts[p].push(s, n, has_items[n])
        for p, n in enumerate(torch.bincount(col_p[rows], minlength=P).tolist()):
            fronts[p].expansions += n  # a chain is one expansion: one model call however many nodes it holds
        # emit complete nodes at the top of each queue, then pick the next nodes to expand
        batch_p: list[int] = []
        chains: list[list[int]] = []
        batch_s: list[float] = []
        for p, f in enumerate(fronts):
            picked = 0
            budget = min(nodes_per_step, max_expansions - f.expansions)
            held: list[tuple[float, int]] = []  # complete items passed by this step, pushed back after it
            while f.heap and len(f.results) < k:
                neg, n = f.heap[0]
                expand = has_kids[n] and n not in f.expanded
                if expand and picked >= budget:
                    break
                if has_items[n] and picked == 0:
                    heapq.heappop(f.heap)  # nothing pending can outrank it: emitted
                    f.results.append((-neg, n))
                elif not expand:  # a complete item (every queued node has an item or children to score)
                    if picked >= budget:
                        break
                    held.append(heapq.heappop(f.heap))  # pending expansions' children may still outrank it
                    continue
                else:
                    heapq.heappop(f.heap)
                    if has_items[n]:
                        held.append((neg, n))  # its item waits; its children are scored now
                if expand:
                    f.expanded.add(n)
                    chain = [n]
                    while (only_child[chain[-1]] >= 0 and has_kids[only_child[chain[-1]]]
                           and not has_items[only_child[chain[-1]]]):  # an item inside a chain is pushed, not passed
                        chain.append(only_child[chain[-1]])
                    batch_p.append(p), chains.append(chain), batch_s.append(-neg)
                    picked += 1
            for entry in held:
                heapq.heappush(f.heap, entry)
        if not batch_p:
            break
        lengths = torch.tensor([len(c) for c in chains], device=dev)
        col_chain = torch.repeat_interleave(torch.arange(len(chains), device=dev), lengths)
        col_p = torch.tensor(batch_p, device=dev)[col_chain]
        col_node = torch.tensor([n for c in chains for n in c], device=dev)
        last = torch.zeros(len(col_node), dtype=torch.bool, device=dev)
        last[lengths.cumsum(0) - 1] = True
        base = torch.tensor(batch_s, device=dev)
        if columns is not None:
            logits = columns.expand(batch_p, chains)
        else:  # a chain's inner columns score its single next token, probability 1 under masked scores: not re-run
            tail = _expand(model, cache, trie, col_p[last], col_node[last], attention_mask, prompt_len)
            logits = tail.new_zeros(len(col_node), tail.shape[1])
            logits[last] = tail
    out = []
    for f in fronts:
        certified = len(f.results) >= k or not f.heap
        found = list(f.results)
        if not certified:  # fill with the best complete entries discovered but not yet proven
            found += sorted(((-neg, n) for neg, n in f.heap if has_items[n]), reverse=True)
        found = found[:k]
        items = hypotheses(trie, torch.tensor([n for _, n in found], dtype=torch.long, device=dev),
                                 torch.tensor([s for s, _ in found], device=dev)) if found else []
        out.append(ExactResult(items=items, certified=certified, expansions=f.expansions))
    return out


def _expand(model: Any, cache: Any, trie: ItemTrie, rows_p: torch.Tensor, nodes: torch.Tensor,
            attention_mask: torch.Tensor, prompt_len: torch.Tensor) -> torch.Tensor:
    """Next-token logits after each node's prefix: its tokens re-run on a copy of its prompt's cache."""
    seqs = trie.sequences(nodes)
    depth = torch.tensor([len(s) for s in seqs], device=nodes.device)
    width = int(depth.max())
    toks = torch.zeros(len(seqs), width, dtype=torch.long, device=nodes.device)
    for i, s in enumerate(seqs):
        toks[i, : len(s)] = torch.tensor(s, device=nodes.device)
    rows_cache = _select_cache(model, cache, rows_p)
    logits, _ = extend(model, toks, rows_cache, attention_mask[rows_p], prompt_len[rows_p], offset=0)
    return logits[torch.arange(len(seqs), device=nodes.device), depth - 1]


@dataclass
class SequenceScores:
    """Teacher-forced scores of one sequence per prompt (lists of 1-D tensors, one entry per token).

    `log_probs`: each token's log-prob under the step distribution ('full' or 'masked');
    `ranks`: 1-based rank of the token among the valid trie children at its step (what beam search
    competes on; the same in both modes); `vocab_ranks`: its rank in the whole vocabulary;
    `num_valid`: how many children were valid at that step.
    """

    log_probs: list[torch.Tensor]
    ranks: list[torch.Tensor]
    vocab_ranks: list[torch.Tensor]
    num_valid: list[torch.Tensor]

    def totals(self) -> list[float]:
        """log P(y|x) of each sequence."""
        return [float(lp.sum()) for lp in self.log_probs]


@torch.no_grad()
def sequence_log_probs(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                       sequences: Sequence[Sequence[int]], *, trie: ItemTrie, score: str = "full") -> SequenceScores:
    """Score `sequences[i]` (a path of `trie`) after prompt i in one forward; ranks for pruning diagnostics."""
    check_score_mode(score)
    input_ids, attention_mask, trie = prepare_inputs(model, input_ids, attention_mask, trie)
    dev = input_ids.device
    N = input_ids.shape[0]
    if len(sequences) != N:
        raise ValueError(f"{N} prompts but {len(sequences)} sequences")
    if N == 0:
        return SequenceScores([], [], [], [])
    lens = torch.tensor([len(s) for s in sequences], device=dev)
    if int(lens.min()) < 1:
        raise DataError("an empty sequence cannot be scored.")
    d = int(lens.max())
    seq = torch.zeros(N, d, dtype=torch.long, device=dev)
    for i, s in enumerate(sequences):
        seq[i, : len(s)] = torch.tensor(list(s), device=dev)
    seq_mask = (torch.arange(d, device=dev)[None, :] < lens[:, None]).to(attention_mask.dtype)
    full_ids = torch.cat([input_ids, seq], 1)
    full_mask = torch.cat([attention_mask, seq_mask], 1)
    from ..models import logits_to_keep

    # the prompt's last position and the sequence's: the last d + 1 columns (all of them where the model lacks
    # logits_to_keep; `first` is where they start either way)
    logits = model(input_ids=full_ids, attention_mask=full_mask, position_ids=positions_from_mask(full_mask),
                   use_cache=False, **logits_to_keep(model, d + 1)).logits
    first = logits.shape[1] - (d + 1)
    node = torch.zeros(N, dtype=torch.long, device=dev)
    cols: dict[str, list[torch.Tensor]] = {"lp": [], "rank": [], "vrank": [], "nvalid": []}
    for j in range(d):
        live = j < lens
        step_logits = logits[:, first + j].float()
        tok = seq[:, j]
        children, valid = trie.padded_children(node.clamp(min=0))
        nxt = trie.step(node, tok)
        bad = live & (nxt < 0)
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            raise DataError(f"sequence {i} ({list(sequences[i])}) is not a path of the item trie at token {j}.",
                            fix="score token sequences of catalog items built with the same tokenizer")
        lp_children = child_log_probs(step_logits, children, valid, score)
        pos = (children == tok[:, None]) & valid
        target_lp = torch.where(pos, lp_children, torch.zeros_like(lp_children)).sum(1)
        target_logit = step_logits.gather(1, tok[:, None])
        child_logits = torch.where(valid, step_logits.gather(1, children), torch.full_like(lp_children, float("-inf")))
        cols["lp"].append(target_lp)
        cols["rank"].append(1 + (child_logits > target_logit).sum(1))
        cols["vrank"].append(1 + (step_logits > target_logit).sum(1))
        cols["nvalid"].append(valid.sum(1))
        node = torch.where(live, nxt, node)
    stacked = {key: torch.stack(v, 1).cpu() for key, v in cols.items()}
    cut = [int(n) for n in lens.tolist()]
    return SequenceScores(*[[stacked[key][i, :n] for i, n in enumerate(cut)]
                            for key in ("lp", "rank", "vrank", "nvalid")])
