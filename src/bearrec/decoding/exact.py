"""Exact top-K over the whole catalog by best-first search on the trie, counts of the entries above a score, and
teacher-forced sequence scoring.

A prefix's log-probability bounds every completion below it (token log-probs are <= 0), so popping
trie nodes best first from a priority queue emits complete items in exact order of probability: when
a complete node is at the top of the queue, nothing unexpanded can beat it. Nodes of many prompts are
expanded together in one forward.

A node is expanded only after its parent, so with attention that takes a custom 4-D mask (sdpa, eager) expanding a
node feeds its last token only: each prompt stores the keys and values of its expanded nodes, and a step's nodes
attend, on a cache built for the step, to the prompt and to their ancestors' stored columns only (not to every
column expanded so far, whose attention would grow with the search). Otherwise (flash attention) an expansion
re-runs the node's prefix tokens on a copy of its prompt's cached KV.

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

The same search answers "do k entries score above this floor?" (`count_above`, whether an item is in the exact top
k): prefixes at or below the floor are never queued, and the search stops at the k-th entry found above it. For an
item ranked far down, that is the first k complete entries the search meets, long before the top k is proven.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..errors import ConfigError, DataError
from ..models import logits_to_keep
from ..trie import ItemTrie
from .common import (Hypothesis, cache_kwarg, check_score_mode, child_log_probs, custom_mask, extend, hypotheses,
                     output_cache, positions_from_mask, prefill, prepare_inputs, select_cache, tree_attention)


@dataclass
class ExactResult:
    """The k most probable catalog entries of one prompt, best first; certified if provably exact."""

    items: list[Hypothesis]
    certified: bool
    expansions: int


class _NodeColumns:
    """Tree-attention expansions (see module doc). Each prompt keeps the keys and values of its expanded nodes in a
    store of columns; a step feeds its nodes on a fresh cache holding the prompt and only the columns of their
    ancestors, so a forward costs the same at the 10,000th expansion as at the first, and prompts with nothing to
    expand sit the step out."""

    def __init__(self, model: Any, cache: Any, trie: ItemTrie, attention_mask: torch.Tensor,
                 prompt_len: torch.Tensor):
        self.model, self.trie, self.prompt_len = model, trie, prompt_len
        self.prompt_mask = attention_mask.bool()
        self.prompt_kv = [(layer.keys, layer.values) for layer in cache.layers]
        self.store = [(k.new_empty(*k.shape[:2], 64, k.shape[3]), v.new_empty(*v.shape[:2], 64, v.shape[3]))
                      for k, v in self.prompt_kv]
        P = attention_mask.shape[0]
        self.used = [0] * P  # columns stored per prompt
        self.cols: list[dict[int, list[int]]] = [{0: []} for _ in range(P)]  # node -> its path's store columns

    def _reserve(self, n: int) -> None:
        """Room for `n` columns per prompt in the store (doubled when short)."""
        have = self.store[0][0].shape[2]
        if n > have:
            grown = [tuple(t.new_empty(*t.shape[:2], max(n, 2 * have), t.shape[3]) for t in kv) for kv in self.store]
            for (gk, gv), (k, v) in zip(grown, self.store):
                gk[:, :, :have], gv[:, :, :have] = k, v
            self.store = grown

    def expand(self, batch_p: list[int], chains: list[list[int]]) -> torch.Tensor:
        """Next-token logits after each node of each (prompt, chain), in the order of the chains and of their nodes;
        each node's keys and values join its prompt's store."""
        W, dev = self.prompt_mask.shape[1], self.prompt_mask.device
        active = sorted(set(batch_p))
        row = {p: a for a, p in enumerate(active)}
        slot = [0] * len(active)
        paths: list[list[int]] = []  # each new node's path as store columns (its own last)
        qa, qi, stored = [], [], []
        for p, chain in zip(batch_p, chains):
            a = row[p]
            path = self.cols[p][int(self.trie.parent[chain[0]])]
            for n in chain:
                path = path + [self.used[p] + slot[a]]
                self.cols[p][n] = path
                paths.append(path)
                qa.append(a), qi.append(slot[a]), stored.append(p)
                slot[a] += 1
        Q = max(slot)
        # the old columns each prompt's new nodes attend to, gathered into the step's cache after the prompt
        old = [sorted({c for path, a in zip(paths, qa) if a == r for c in path if c < self.used[active[r]]})
               for r in range(len(active))]
        N = max(len(o) for o in old)
        where = [{c: j for j, c in enumerate(o)} for o in old]
        gather = torch.zeros(len(active), N, dtype=torch.long, device=dev)
        for r, o in enumerate(old):
            gather[r, :len(o)] = torch.tensor(o, dtype=torch.long, device=dev)
        mr, mq, mc = [], [], []
        for path, a, i, p in zip(paths, qa, qi, stored):
            for c in path:
                mr.append(a), mq.append(i)
                mc.append(where[a][c] if c < self.used[p] else N + c - self.used[p])
        allowed = torch.zeros(len(active), Q, N + Q, dtype=torch.bool, device=dev)
        allowed[torch.tensor(mr, device=dev), torch.tensor(mq, device=dev), torch.tensor(mc, device=dev)] = True
        rows = torch.tensor(active, device=dev)
        allowed = torch.cat([self.prompt_mask[rows][:, None, :].expand(len(active), Q, W), allowed], 2)
        qa_t, qi_t = torch.tensor(qa, device=dev), torch.tensor(qi, device=dev)
        nodes_t = torch.tensor([n for c in chains for n in c], device=dev)
        ids = torch.zeros(len(active), Q, dtype=torch.long, device=dev)
        ids[qa_t, qi_t] = self.trie.token[nodes_t]
        pos = self.prompt_len[rows][:, None].expand(len(active), Q).clone()
        pos[qa_t, qi_t] += self.trie.depth[nodes_t] - 1
        from transformers import DynamicCache

        data = []
        pick = (rows[:, None], slice(None), gather)  # (rows, N, heads, dim): only the N columns are copied
        for (pk, pv), (sk, sv) in zip(self.prompt_kv, self.store):
            data.append((torch.cat([pk[rows], sk[pick].transpose(1, 2)], 2),
                         torch.cat([pv[rows], sv[pick].transpose(1, 2)], 2)))
        out = self.model(input_ids=ids, attention_mask=custom_mask(self.model, allowed), position_ids=pos,
                         use_cache=True, **{cache_kwarg(self.model): DynamicCache(data, config=self.model.config)})
        self._reserve(max(self.used[p] + slot[row[p]] for p in active))
        stored_t = torch.tensor(stored, device=dev)
        cols_t = torch.tensor([self.used[p] for p in stored], device=dev) + qi_t
        for (sk, sv), layer in zip(self.store, output_cache(out).layers):
            sk[stored_t, :, cols_t] = layer.keys[qa_t, :, W + N + qi_t]
            sv[stored_t, :, cols_t] = layer.values[qa_t, :, W + N + qi_t]
        for p in active:
            self.used[p] += slot[row[p]]
        return out.logits[qa_t, qi_t].float()


class _Frontier:
    """One prompt's best-first queue, its emitted results and the k best complete scores seen (for pruning).

    Entries scoring at or below `floor` are never queued. In counting mode (`count=True`) the search only asks
    whether k entries score above the floor: it is done once k are discovered (`above`, seeded with `known`). Every
    node above the floor is expanded before it can say "fewer than k", in whatever order, so it queues only nodes
    with children, deepest first (then most probable): dives reach complete entries in a title's length of steps,
    where best-first order reaches them only once it has proven nearly the whole top k."""

    def __init__(self, k: int, floor: float = float("-inf"), known: Sequence[int] = (), count: bool = False,
                 exclude: int = -1):
        self.k, self.floor, self.count, self.exclude = k, floor, count, exclude
        self.heap: list[tuple[Any, float, int]] = []  # (priority, -score, node), smallest first
        self.results: list[tuple[float, int]] = []
        self.best_complete: list[float] = []  # min-heap of the k best complete scores discovered
        # complete nodes discovered (or known) to score above the floor, never `exclude`
        self.above: set[int] = {n for n in known if n >= 0 and n != exclude}
        self.expansions = 0
        self.expanded: set[int] = set()  # nodes whose children are scored (an item among them may still be queued)

    def cutoff(self) -> float:
        """No completion scoring below this can enter the top k any more."""
        return self.best_complete[0] if len(self.best_complete) >= self.k else float("-inf")

    def done(self) -> bool:
        return len(self.above) >= self.k if self.count else len(self.results) >= self.k

    def push(self, score: float, node: int, complete: bool, expandable: bool, depth: int) -> None:
        if score <= self.floor or score < self.cutoff():
            return
        if complete and node != self.exclude:
            self.above.add(node)
            heapq.heappush(self.best_complete, score)
            if len(self.best_complete) > self.k:
                heapq.heappop(self.best_complete)
        if not self.count:
            heapq.heappush(self.heap, (-score, -score, node))
        elif expandable:
            heapq.heappush(self.heap, ((-depth, -score), -score, node))


@torch.no_grad()
def exact_top_k(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, trie: ItemTrie,
                k: int, *, score_mode: str = "full", max_expansions: int = 2000,
                nodes_per_step: int = 32) -> list[ExactResult]:
    """For each left-padded prompt, the k catalog entries of highest P(y|x), best first (see module doc).

    `max_expansions` bounds the expansions per prompt (a node, or a single-child chain, scored in one model call);
    when it is hit, the best entries found so far are returned with certified=False. `nodes_per_step` nodes per
    prompt are expanded per forward (fewer forwards, at the cost of a few speculative expansions).
    """
    _check_k(k)
    fronts = [_Frontier(k) for _ in range(input_ids.shape[0])]
    trie = _search(model, input_ids, attention_mask, trie, fronts, score_mode, max_expansions, nodes_per_step)
    has_items = (trie.item_counts(torch.arange(trie.num_nodes, device=trie.device)) > 0).tolist()
    out = []
    for f in fronts:
        certified = f.done() or not f.heap
        found = list(f.results)
        if not certified:  # fill with the best complete entries discovered but not yet proven
            found += sorted(((-neg, n) for _, neg, n in f.heap if has_items[n]), reverse=True)
        found = found[:k]
        items = hypotheses(trie, torch.tensor([n for _, n in found], dtype=torch.long, device=trie.device),
                           torch.tensor([s for s, _ in found], device=trie.device)) if found else []
        out.append(ExactResult(items=items, certified=certified, expansions=f.expansions))
    return out


@dataclass
class CountResult:
    """How many catalog entries score above a prompt's floor, counted up to k; certified if provably exact."""

    count: int
    certified: bool
    expansions: int


@torch.no_grad()
def count_above(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, trie: ItemTrie, k: int,
                floors: Sequence[float], *, known: Sequence[Sequence[int]] | None = None,
                exclude: Sequence[int] | None = None, score_mode: str = "full", max_expansions: int = 2000,
                nodes_per_step: int = 32) -> list[CountResult]:
    """For each prompt, how many catalog entries (trie nodes holding items) score above its floor, up to k.

    Whether an item is in the exact top k is `count_above(..., floors=[its score], exclude=[its node]) < k`: the
    search expands only prefixes scoring above the floor and stops at the k-th entry found there, which costs far less
    than proving the top k when the item ranks low. `known[i]`: entry nodes already known to score above floor i
    (from a beam search's list, say); k of them answer without a model call. `exclude[i]`: an entry never counted
    (the item itself: its score, computed along another path, may land above its own floor in bf16).
    """
    _check_k(k)
    P = input_ids.shape[0]
    for name, given in (("floors", floors), ("known", known), ("exclude", exclude)):
        if given is not None and len(given) != P:
            raise ValueError(f"{P} prompts but {len(given)} {name}")
    fronts = [_Frontier(k, float(fl), known[i] if known is not None else (), count=True,
                        exclude=exclude[i] if exclude is not None else -1) for i, fl in enumerate(floors)]
    _search(model, input_ids, attention_mask, trie, fronts, score_mode, max_expansions, nodes_per_step)
    return [CountResult(count=min(k, len(f.above)), certified=f.done() or not f.heap, expansions=f.expansions)
            for f in fronts]


def _check_k(k: int) -> None:
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}.")


def _search(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, trie: ItemTrie,
            fronts: list[_Frontier], score_mode: str, max_expansions: int, nodes_per_step: int) -> ItemTrie:
    """Run best-first search for each prompt's frontier until it is done, its queue empty or its budget spent;
    returns the trie on the model's device."""
    check_score_mode(score_mode)
    input_ids, attention_mask, trie = prepare_inputs(model, input_ids, attention_mask, trie)
    dev = input_ids.device
    P = input_ids.shape[0]
    if P == 0 or all(f.done() for f in fronts):
        return trie
    has_items = (trie.item_counts(torch.arange(trie.num_nodes, device=dev)) > 0).tolist()
    has_kids = (trie.num_children(torch.arange(trie.num_nodes, device=dev)) > 0).tolist()
    depth = trie.depth.tolist()
    # chains only under 'masked' scores, where their tokens cost nothing: under 'full' each token lowers the score,
    # and best-first search would prune most of a long chain that taking it whole evaluates anyway
    masked = score_mode == "masked"
    only_child = trie.only_child.tolist() if masked else [-1] * trie.num_nodes
    chain_leaf = trie.chain_leaf.tolist() if masked else None
    prompt_len = attention_mask.long().sum(1)
    logits, cache = prefill(model, input_ids, attention_mask)
    columns = _NodeColumns(model, cache, trie, attention_mask, prompt_len) if tree_attention(model) else None
    if columns is not None:
        cache = None  # the columns hold the prompt's keys and values
    # one row of `logits` per evaluated column: the prompt it belongs to, the node whose children it scores, and
    # whether it is its chain's last (earlier ones score the chain's own next token)
    col_p = torch.arange(P, device=dev)
    col_node = torch.zeros(P, dtype=torch.long, device=dev)
    col_chain = torch.arange(P, device=dev)
    last = torch.ones(P, dtype=torch.bool, device=dev)
    base = torch.zeros(P, device=dev)  # score of each chain's first node
    while True:
        tokens, valid = trie.padded_children(col_node)
        lp = child_log_probs(logits, tokens, valid, score_mode)
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
                fronts[p].push(s, n, has_items[n], has_kids[n], depth[n])
        for p, n in enumerate(torch.bincount(col_p[rows], minlength=P).tolist()):
            fronts[p].expansions += n  # a chain is one expansion: one model call however many nodes it holds
        # emit complete nodes at the top of each queue, then pick the next nodes to expand
        batch_p: list[int] = []
        chains: list[list[int]] = []
        batch_s: list[float] = []
        for p, f in enumerate(fronts):
            picked = 0
            budget = min(nodes_per_step, max_expansions - f.expansions)
            held: list[tuple[Any, float, int]] = []  # complete items passed by this step, pushed back after it
            while f.heap and not f.done():
                key, neg, n = f.heap[0]
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
                        held.append((key, neg, n))  # its item waits; its children are scored now
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
    return trie


def _expand(model: Any, cache: Any, trie: ItemTrie, rows_p: torch.Tensor, nodes: torch.Tensor,
            attention_mask: torch.Tensor, prompt_len: torch.Tensor) -> torch.Tensor:
    """Next-token logits after each node's prefix: its tokens re-run on a copy of its prompt's cache."""
    seqs = trie.sequences(nodes)
    depth = torch.tensor([len(s) for s in seqs], device=nodes.device)
    width = int(depth.max())
    toks = torch.zeros(len(seqs), width, dtype=torch.long, device=nodes.device)
    for i, s in enumerate(seqs):
        toks[i, : len(s)] = torch.tensor(s, device=nodes.device)
    rows_cache = select_cache(model, cache, rows_p)
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
                       sequences: Sequence[Sequence[int]], *, trie: ItemTrie, score_mode: str = "full") -> SequenceScores:
    """Score `sequences[i]` (a path of `trie`) after prompt i in one forward; ranks for pruning diagnostics."""
    check_score_mode(score_mode)
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
        lp_children = child_log_probs(step_logits, children, valid, score_mode)
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
