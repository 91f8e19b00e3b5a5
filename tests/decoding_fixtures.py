"""Tiny random models, tries and prompts for the decoding tests and benchmarks (no downloads); the slow reference searches the
tests compare against are in tests/decoding_oracles.py."""
from __future__ import annotations

import random
from typing import Any

import torch

from bearrec.decoding.common import left_pad
from bearrec.trie import ItemTrie


def tiny_llama(vocab_size: int = 64, seed: int = 0, init_range: float = 0.3, **overrides: Any) -> Any:
    """A random 2-layer Llama whose next-token distributions are peaked enough to avoid near-ties."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, intermediate_size=64, initializer_range=init_range,
               max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    cfg.update(overrides)
    model = LlamaForCausalLM(LlamaConfig(**cfg))
    return model.eval()


def random_sequences(n_items: int, vocab_size: int, eos: int = 2, max_len: int = 5, seed: int = 0,
                     dup_rate: float = 0.1, prefix_rate: float = 0.1) -> list[list[int]]:
    """Random title token sequences ending with EOS, with duplicate titles and titles prefixing others."""
    rng = random.Random(seed)
    body = [t for t in range(3, vocab_size)]
    seqs: list[list[int]] = []
    for _ in range(n_items):
        r = rng.random()
        if seqs and r < dup_rate:
            seqs.append(list(rng.choice(seqs)))
        elif seqs and r < dup_rate + prefix_rate and len(rng.choice(seqs)) > 2:
            base = rng.choice(seqs)
            cut = rng.randint(1, len(base) - 1)
            seqs.append(base[:cut] + [eos])
        else:
            seqs.append([rng.choice(body) for _ in range(rng.randint(1, max_len))] + [eos])
    return seqs


def random_trie(n_items: int, vocab_size: int, seed: int = 0, **kw: Any) -> ItemTrie:
    """A trie of `random_sequences` with item ids 'i0', 'i1', ..."""
    seqs = random_sequences(n_items, vocab_size, seed=seed, **kw)
    return ItemTrie.from_sequences(seqs, [f"i{i}" for i in range(len(seqs))],
                                   meta={"eos_token_id": 2, "vocab_size": vocab_size})


def random_prompts(n: int, vocab_size: int, min_len: int = 3, max_len: int = 12, seed: int = 0,
                   pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded random prompts (input_ids, attention_mask) of varied lengths."""
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(min_len, max_len + 1, (n,), generator=g).tolist()
    return left_pad([torch.randint(3, vocab_size, (L,), generator=g).tolist() for L in lens], pad)


def item_trie(seqs: list[list[int]]) -> ItemTrie:
    """The trie of `seqs` with item ids 'i0', 'i1', ... (no tokenizer metadata)."""
    return ItemTrie.from_sequences(seqs, [f"i{i}" for i in range(len(seqs))])
