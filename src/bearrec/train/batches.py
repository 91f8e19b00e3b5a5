"""Tokenised training rows (prompt + response, labels on the response only) and the batch collator.

The collator also walks the item trie along each row's response so the loss knows, for every label
token, the trie node of its prefix: the loss then gathers that node's children from the logits
(`ItemTrie.padded_children`) instead of a dense (tokens x vocabulary) mask prepared ahead of time.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from ..data.dataset import Interaction
from ..errors import DataError
from ..prompts import ItemTexts, boundary_merges
from ..trie import ItemTrie

IGNORE = -100


def encode_rows(rows: Sequence[Interaction], texts: ItemTexts, tokenizer: Any,
                max_length: int | None = None) -> list[dict[str, list[int]]]:
    """{input_ids, labels} per row: prompt ids then the target's response ids (the trie's tokenization), as `texts`
    shows the items (`prompts.item_texts`).

    Warns (with the count) when some rows' whole text tokenizes otherwise: see `prompts.boundary_merges`.
    """
    targets = sorted({row.target for row in rows})
    missing = [t for t in targets if t not in texts.response]
    if missing:
        raise DataError(f"target item {missing[0]!r} is not in the catalog ({len(missing)} such targets).",
                        fix="re-run `bearrec prepare` so splits and catalog agree")
    responses = dict(zip(targets, texts.response_ids(tokenizer, targets)))
    out, whole = [], []
    for row in rows:
        for item in row.history:
            if item not in texts.history:
                raise DataError(f"history item {item!r} of user {row.user_id!r} is not in the catalog.")
        whole.append(texts.text(row.history, row.target))
        prompt = texts.prompt_ids(tokenizer, row.history)
        response = responses[row.target]
        if max_length is not None and len(prompt) + len(response) > max_length:
            raise DataError(f"the row of user {row.user_id!r} is {len(prompt) + len(response)} tokens, more than "
                            f"the model's {max_length}.", fix="lower max_history or use a model with longer context")
        out.append({"input_ids": prompt + response, "labels": [IGNORE] * len(prompt) + response})
    merged = boundary_merges(tokenizer, whole, [r["input_ids"][:-1] for r in out])  # split ids without EOS
    if merged:
        warnings.warn(f"{len(merged)} of {len(rows)} rows (first: user {rows[merged[0]].user_id!r}) tokenize "
                      "otherwise as one text than as prompt + response: the tokenizer merges across their boundary. "
                      "Training and decoding both use the split tokenization, so they agree, but a pretrained "
                      "model never saw it. Fix: end the template's response header with a character the "
                      "tokenizer always splits on (a newline for most).", stacklevel=2)
    return out


@dataclass
class TrainCollator:
    """Left-pads rows into a batch (every response ends in the last column, so the loss needs the logits of only the
    last `response length + 1` positions: `logits_to_keep`), with the position ids that make a padded row compute
    what the unpadded row would, and `trie_nodes`: the trie node of each label token's prefix (-1 elsewhere).

    With `with_prompts`, it also adds left-padded `prompt_ids`/`prompt_mask` for the direct objective's beam search.
    """

    pad_token_id: int
    trie: ItemTrie
    with_prompts: bool = False

    def __call__(self, features: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        n, width = len(features), max(len(f["input_ids"]) for f in features)
        input_ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((n, width), IGNORE, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        for i, f in enumerate(features):
            k = len(f["input_ids"])
            input_ids[i, width - k:] = torch.as_tensor(f["input_ids"])
            labels[i, width - k:] = torch.as_tensor(f["labels"])
            attention[i, width - k:] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention,
                 "position_ids": (attention.cumsum(1) - 1).clamp(min=0), "labels": labels,
                 "trie_nodes": self.label_nodes(labels)}
        if self.with_prompts:
            batch.update(self.prompts(input_ids, attention, labels))
        return batch

    def label_nodes(self, labels: torch.Tensor) -> torch.Tensor:
        """Walk the trie along each row's label tokens at once (one vectorised step per response position)."""
        is_label = labels != IGNORE
        position = is_label.cumsum(1) - 1  # index of each label token within its response
        steps = int(is_label.sum(1).max()) if labels.numel() else 0
        responses = torch.full((labels.shape[0], steps), -1, dtype=torch.long)
        rows, cols = is_label.nonzero(as_tuple=True)
        responses[rows, position[rows, cols]] = labels[rows, cols]
        prefix_nodes = torch.full_like(responses, -1)
        node = torch.zeros(labels.shape[0], dtype=torch.long)
        for s in range(steps):
            prefix_nodes[:, s] = node
            node = self.trie.step(node, responses[:, s].clamp(min=0)).cpu()
        nodes = torch.full_like(labels, -1)
        nodes[rows, cols] = prefix_nodes[rows, position[rows, cols]]
        return nodes

    def prompts(self, input_ids: torch.Tensor, attention: torch.Tensor, labels: torch.Tensor
                ) -> dict[str, torch.Tensor]:
        """Left-padded prompt tokens (every attended token before the first label) and their attention mask."""
        is_prompt = attention.bool() & (labels == IGNORE) & ((labels != IGNORE).cumsum(1) == 0)
        lengths = is_prompt.sum(1)
        width = int(lengths.max())
        ids = torch.full((len(lengths), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, k in enumerate(lengths.tolist()):
            ids[i, width - k:] = input_ids[i][is_prompt[i]]
            mask[i, width - k:] = 1
        return {"prompt_ids": ids, "prompt_mask": mask}
