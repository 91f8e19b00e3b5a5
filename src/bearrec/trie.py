"""The item trie: every catalog item's response token sequence, in flat arrays that live on any device.

Nodes are numbered in depth-first order (0 is the root). The edges of node n are
`edge_token[child_ptr[n]:child_ptr[n+1]]` (sorted) leading to `edge_child[...]`; a node where a
sequence ends lists its items in `item_index[item_ptr[n]:item_ptr[n+1]]`, so titles shared by
several items map to all of them. Lookups of many (node, token) pairs at once are one
`searchsorted` over `edge_key = parent * key_base + token`, which is what makes masks for all beams
of all prompts a handful of tensor operations.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .errors import ConfigError, DataError
from .files import atomic_open
from .prompts import encode_responses


class ItemTrie:
    """A prefix tree over token sequences, stored as flat tensors (see the module docstring)."""

    def __init__(self, child_ptr: torch.Tensor, edge_token: torch.Tensor, edge_child: torch.Tensor,
                 item_ptr: torch.Tensor, item_index: torch.Tensor, item_ids: Sequence[str],
                 depth: torch.Tensor, meta: dict[str, Any] | None = None):
        self.child_ptr = child_ptr
        self.edge_token = edge_token
        self.edge_child = edge_child
        self.item_ptr = item_ptr
        self.item_index = item_index
        self.item_ids = list(item_ids)
        self.depth = depth
        self.meta = dict(meta or {})
        n_nodes = child_ptr.numel() - 1
        parent = torch.repeat_interleave(torch.arange(n_nodes, device=child_ptr.device), child_ptr.diff())
        self.key_base = int(edge_token.max().item()) + 1 if edge_token.numel() else 1
        self.edge_key = parent * self.key_base + edge_token

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_sequences(cls, sequences: Sequence[Sequence[int]], item_ids: Sequence[str] | None = None,
                       meta: dict[str, Any] | None = None) -> "ItemTrie":
        """Build the trie of `sequences`; `item_ids[i]` (default: str(i)) is the item of sequence i."""
        if item_ids is None:
            item_ids = [str(i) for i in range(len(sequences))]
        if len(item_ids) != len(sequences):
            raise ValueError(f"{len(sequences)} sequences but {len(item_ids)} item ids")
        for i, seq in enumerate(sequences):
            if len(seq) == 0:
                raise DataError(f"item {item_ids[i]!r} has an empty token sequence.",
                                fix="every item needs at least one token")
        order = sorted(range(len(sequences)), key=lambda i: tuple(sequences[i]))
        parents: list[int] = []
        tokens: list[int] = []
        depth = [0]
        leaf_of: list[int] = []  # node id for each sequence in `order`
        path: list[int] = [0]  # node ids along the previous sequence
        prev: Sequence[int] = ()
        for i in order:
            seq = sequences[i]
            lcp = 0
            limit = min(len(seq), len(prev))
            while lcp < limit and seq[lcp] == prev[lcp]:
                lcp += 1
            del path[lcp + 1:]
            for pos in range(lcp, len(seq)):
                node = len(depth)
                parents.append(path[-1])
                tokens.append(int(seq[pos]))
                depth.append(pos + 1)
                path.append(node)
            leaf_of.append(path[len(seq)])
            prev = seq
        n_nodes = len(depth)
        parent_arr = np.asarray(parents, dtype=np.int64)
        token_arr = np.asarray(tokens, dtype=np.int64)
        if token_arr.size and token_arr.min() < 0:
            raise DataError("token ids must be non-negative.")
        child_arr = np.arange(1, n_nodes, dtype=np.int64)
        by_edge = np.lexsort((token_arr, parent_arr))
        child_ptr = np.zeros(n_nodes + 1, dtype=np.int64)
        np.add.at(child_ptr, parent_arr + 1, 1)
        leaf_arr = np.asarray(leaf_of, dtype=np.int64)
        seq_arr = np.asarray(order, dtype=np.int64)
        by_leaf = np.argsort(leaf_arr, kind="stable")
        item_ptr = np.zeros(n_nodes + 1, dtype=np.int64)
        np.add.at(item_ptr, leaf_arr + 1, 1)
        t = torch.from_numpy
        return cls(child_ptr=t(np.cumsum(child_ptr)), edge_token=t(token_arr[by_edge].copy()),
                   edge_child=t(child_arr[by_edge].copy()), item_ptr=t(np.cumsum(item_ptr)),
                   item_index=t(seq_arr[by_leaf].copy()), item_ids=item_ids,
                   depth=t(np.asarray(depth, dtype=np.int64)), meta=meta)

    @classmethod
    def from_catalog(cls, items: Mapping[str, str], tokenizer: Any, template: Any) -> "ItemTrie":
        """The trie of every catalog item's response tokens (see `bearrec.prompts.encode_responses`)."""
        if not items:
            raise DataError("the catalog is empty.", fix="prepare a dataset with at least one item")
        ids = list(items)
        sequences = encode_responses(tokenizer, template, [items[i] for i in ids])
        meta = {"eos_token_id": tokenizer.eos_token_id, "vocab_size": len(tokenizer),
                "tokenizer": getattr(tokenizer, "name_or_path", "")}
        return cls.from_sequences(sequences, ids, meta=meta)

    # ------------------------------------------------------------------ queries
    @property
    def num_nodes(self) -> int:
        return self.child_ptr.numel() - 1

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def device(self) -> torch.device:
        return self.child_ptr.device

    @property
    def max_depth(self) -> int:
        return int(self.depth.max().item())

    def to(self, device: torch.device | str) -> "ItemTrie":
        """The trie with its tensors on `device`: itself when they are there already (keeping what it computed once),
        else a copy."""
        if torch.device(device) == self.device or (torch.device(device).type == self.device.type
                                                    and torch.device(device).index is None):
            return self
        return ItemTrie(self.child_ptr.to(device), self.edge_token.to(device), self.edge_child.to(device),
                        self.item_ptr.to(device), self.item_index.to(device), self.item_ids,
                        self.depth.to(device), self.meta)

    def node_of(self, prefix: Sequence[int]) -> int:
        """The node reached by a token prefix from the root, or -1 if the prefix is not in the trie."""
        node = 0
        for tok in prefix:
            step = self.step(torch.tensor([node], device=self.device), torch.tensor([int(tok)], device=self.device))
            node = int(step[0])
            if node < 0:
                return -1
        return node

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        """The valid next token ids after a token prefix (empty if the prefix is complete or invalid)."""
        node = self.node_of(prefix)
        if node < 0:
            return []
        lo, hi = int(self.child_ptr[node]), int(self.child_ptr[node + 1])
        return self.edge_token[lo:hi].tolist()

    def items_at(self, node: int) -> list[str]:
        """The ids of the items whose sequence ends at `node` (empty for an inner node)."""
        lo, hi = int(self.item_ptr[node]), int(self.item_ptr[node + 1])
        return [self.item_ids[i] for i in self.item_index[lo:hi].tolist()]

    def item_end_nodes(self) -> torch.Tensor:
        """(num_items,) the node where each item's sequence ends, by its index in item_ids (computed once)."""
        if getattr(self, "_end_nodes", None) is None:
            owners = torch.repeat_interleave(torch.arange(self.num_nodes, device=self.device), self.item_ptr.diff())
            self._end_nodes = torch.empty(self.num_items, dtype=torch.long, device=self.device)
            self._end_nodes[self.item_index] = owners
        return self._end_nodes

    def sum_below(self, item_values: torch.Tensor) -> torch.Tensor:
        """(..., num_nodes): each node's total of `item_values` (..., num_items, by index in item_ids) over the items
        ending at or below it; the root holds the whole catalog's."""
        out = item_values.new_zeros((*item_values.shape[:-1], self.num_nodes))
        out.index_add_(-1, self.item_end_nodes(), item_values)
        depth = self.depth.long()
        for d in range(int(depth.max()) if depth.numel() else 0, 0, -1):  # deepest first: a node is whole when added
            nodes = (depth == d).nonzero().squeeze(1)
            out.index_add_(-1, self.parent[nodes], out[..., nodes])
        return out

    def item_node(self, item_id: str) -> int:
        """The node where item `item_id`'s sequence ends (-1 when the trie does not hold it)."""
        if getattr(self, "_item_node", None) is None:
            self._item_node = dict(zip(self.item_ids, self.item_end_nodes().tolist()))
        return self._item_node.get(str(item_id), -1)

    def items_of(self, sequence: Sequence[int]) -> list[str]:
        """The ids of the items whose token sequence is exactly `sequence`."""
        node = self.node_of(sequence)
        return self.items_at(node) if node >= 0 else []

    def step(self, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The child of each node along each token, or -1 where no such edge exists (vectorised)."""
        nodes = nodes.to(self.device)
        tokens = tokens.to(self.device)
        key = nodes * self.key_base + tokens
        pos = torch.searchsorted(self.edge_key, key).clamp_(max=max(self.edge_key.numel() - 1, 0))
        if self.edge_key.numel() == 0:
            return torch.full_like(nodes, -1)
        ok = (self.edge_key[pos] == key) & (nodes >= 0) & (tokens >= 0) & (tokens < self.key_base)
        return torch.where(ok, self.edge_child[pos], torch.full_like(nodes, -1))

    def num_children(self, nodes: torch.Tensor) -> torch.Tensor:
        """The number of valid next tokens at each node (0 for -1)."""
        safe = nodes.clamp(min=0)
        counts = self.child_ptr[safe + 1] - self.child_ptr[safe]
        return torch.where(nodes >= 0, counts, torch.zeros_like(counts))

    def children(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For a flat tensor of nodes: (row index, token) of every valid next token, concatenated."""
        nodes = nodes.to(self.device).reshape(-1)
        counts = self.num_children(nodes)
        rows = torch.repeat_interleave(torch.arange(nodes.numel(), device=self.device), counts)
        starts = self.child_ptr[nodes.clamp(min=0)]
        offsets = torch.arange(rows.numel(), device=self.device) - torch.repeat_interleave(
            torch.cumsum(counts, 0) - counts, counts)
        return rows, self.edge_token[starts[rows] + offsets]

    def allowed_mask(self, nodes: torch.Tensor, vocab_size: int) -> torch.Tensor:
        """Boolean (len(nodes), vocab_size) mask of the valid next tokens of each node."""
        nodes = nodes.reshape(-1)
        mask = torch.zeros(nodes.numel(), vocab_size, dtype=torch.bool, device=self.device)
        rows, toks = self.children(nodes)
        if toks.numel() and int(toks.max()) >= vocab_size:
            raise ConfigError(f"the trie holds token id {int(toks.max())} but the model's vocabulary has "
                              f"{vocab_size} entries. Fix: build the trie with the model's own tokenizer.")
        mask[rows, toks] = True
        return mask

    def padded_children(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens, valid) of shape (len(nodes), max fan-out): each node's next tokens, padded with 0."""
        nodes = nodes.reshape(-1).to(self.device)
        counts = self.num_children(nodes)
        width = max(int(counts.max()) if counts.numel() else 0, 1)
        rows, toks = self.children(nodes)
        cols = torch.arange(rows.numel(), device=self.device) - torch.repeat_interleave(
            torch.cumsum(counts, 0) - counts, counts)
        out = torch.zeros(nodes.numel(), width, dtype=torch.long, device=self.device)
        valid = torch.zeros(nodes.numel(), width, dtype=torch.bool, device=self.device)
        out[rows, cols] = toks
        valid[rows, cols] = True
        return out, valid

    @property
    def parent(self) -> torch.Tensor:
        """The parent of every node (-1 for the root), computed once per trie."""
        self._node_arrays()
        return self._parent

    @property
    def token(self) -> torch.Tensor:
        """The token on the edge into every node (-1 for the root), computed once per trie."""
        self._node_arrays()
        return self._token

    @property
    def entries(self) -> torch.Tensor:
        """The nodes where at least one item ends, ascending (the catalog's entries), computed once per trie."""
        if getattr(self, "_entries", None) is None:
            self._entries = torch.nonzero(self.item_ptr.diff() > 0).squeeze(1)
        return self._entries

    @property
    def inner(self) -> torch.Tensor:
        """The nodes with at least one child, ascending (the root included), computed once per trie."""
        if getattr(self, "_inner", None) is None:
            self._inner = torch.nonzero(self.child_ptr.diff() > 0).squeeze(1)
        return self._inner

    @property
    def only_child(self) -> torch.Tensor:
        """Every node's child where it has exactly one, else -1: single-child chains (a title's tokens after the
        prefix that singles it out) are taken in one model call by exact search. Computed once per trie."""
        self._chain_arrays()
        return self._only_child

    @property
    def chain_leaf(self) -> torch.Tensor:
        """Every node's leaf where the path below it never branches and ends at an item (each node on it with one
        child and no item), else -1. Computed once per trie."""
        self._chain_arrays()
        return self._chain_leaf

    def _chain_arrays(self) -> None:
        if getattr(self, "_only_child", None) is None:
            counts = self.child_ptr.diff()
            first = self.edge_child[self.child_ptr[:-1].clamp(max=max(self.edge_child.numel() - 1, 0))] \
                if self.edge_child.numel() else torch.zeros_like(counts)
            self._only_child = torch.where(counts == 1, first, torch.full_like(counts, -1))
            # nodes are numbered depth first, so every child comes after its parent: fill from the last node up
            only, kids = self._only_child.tolist(), counts.tolist()
            items = self.item_counts(torch.arange(self.num_nodes, device=self.device)).tolist()
            leaf = [-1] * len(only)
            for n in range(len(only) - 1, -1, -1):
                if items[n] and kids[n] == 0:
                    leaf[n] = n
                elif not items[n] and only[n] >= 0:
                    leaf[n] = leaf[only[n]]
            self._chain_leaf = torch.tensor(leaf, dtype=torch.long, device=self.device)

    def _node_arrays(self) -> None:
        if getattr(self, "_parent", None) is None:
            n = self.num_nodes
            owners = torch.repeat_interleave(torch.arange(n, device=self.device), self.child_ptr.diff())
            self._parent = torch.full((n,), -1, dtype=torch.long, device=self.device)
            self._token = torch.full((n,), -1, dtype=torch.long, device=self.device)
            self._parent[self.edge_child] = owners
            self._token[self.edge_child] = self.edge_token

    def sequences(self, nodes: torch.Tensor) -> list[list[int]]:
        """The token sequence leading to each node (a vectorised walk up to the root)."""
        nodes = nodes.to(self.device).reshape(-1)
        if nodes.numel() == 0:
            return []
        depth = self.depth[nodes]
        width = int(depth.max())
        out = torch.full((nodes.numel(), width), -1, dtype=torch.long, device=nodes.device)
        cur = nodes.clone()
        for back in range(width):
            col = depth - 1 - back
            live = col >= 0
            out[live, col[live]] = self.token[cur[live]]
            cur = torch.where(live, self.parent[cur.clamp(min=0)], cur)
        return [row[: int(d)] for row, d in zip(out.tolist(), depth.tolist())]

    def item_counts(self, nodes: torch.Tensor) -> torch.Tensor:
        """How many items end at each node (0 for -1)."""
        safe = nodes.clamp(min=0)
        counts = self.item_ptr[safe + 1] - self.item_ptr[safe]
        return torch.where(nodes >= 0, counts, torch.zeros_like(counts))

    def check_tokenizer(self, tokenizer: Any) -> None:
        """Raise if `tokenizer` differs from the one the trie was built with (EOS id or vocabulary size)."""
        want = (self.meta.get("eos_token_id"), self.meta.get("vocab_size"))
        got = (tokenizer.eos_token_id, len(tokenizer))
        if None not in want and want != got:
            raise ConfigError(f"the item trie was built with another tokenizer (EOS id, vocabulary size) = {want}, "
                              f"this one has {got}. Fix: rebuild the trie with the model's tokenizer.")

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """Write the trie to one file (atomically)."""
        state = {k: getattr(self, k).cpu() for k in
                 ("child_ptr", "edge_token", "edge_child", "item_ptr", "item_index", "depth")}
        state["item_ids"] = self.item_ids
        state["meta"] = self.meta
        with atomic_open(path, "wb") as f:
            torch.save(state, f)

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> "ItemTrie":
        state = torch.load(path, map_location=device, weights_only=True)
        return cls(state["child_ptr"], state["edge_token"], state["edge_child"], state["item_ptr"],
                   state["item_index"], state["item_ids"], state["depth"], state["meta"])
