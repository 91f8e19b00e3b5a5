"""IGD's decoding: node entropies against brute force, and IGD beam search against HF generate with IGD's logits
processor (the authors' rule, on HF's public LogitsProcessor API, computed here from plain Python sets)."""
from __future__ import annotations

import math

import pytest
import torch

from bearrec.decoding import IGScaling, beam_search
from bearrec.decoding.ig import node_entropy
from bearrec.errors import ConfigError
from decoding_fixtures import item_trie as make_trie, random_prompts, random_sequences, tiny_llama
from decoding_oracles import dict_trie, hf_rescored_beam
from test_d3 import node_prefixes

V, EOS, PAD = 64, 2, 0


def test_node_entropy_is_the_entropy_mass_of_the_items_below():
    seqs = random_sequences(40, V, seed=8)
    trie = make_trie(seqs)
    counts = torch.randint(0, 5, (trie.num_items,), generator=torch.Generator().manual_seed(0)).float()
    got = node_entropy(trie, counts)
    total = float(counts.sum())
    sequence = {f"i{i}": tuple(s) for i, s in enumerate(seqs)}
    for node, prefix in node_prefixes(trie).items():
        want = sum(-c / total * math.log(c / total) for item, c in zip(trie.item_ids, counts.tolist())
                   if c > 0 and sequence[item][:len(prefix)] == prefix)
        assert float(got[node]) == pytest.approx(want, abs=1e-9)


def ig_processor(seqs, counts, width: int, weight: float):
    """IGD's decoding as an HF LogitsProcessor: each valid token's log-prob times 1 - weight * its min-max scaled
    information gain among its siblings; everything else -inf."""
    from transformers import LogitsProcessor

    nxt, _ = dict_trie(seqs)
    total = sum(counts)

    def entropy(prefix):
        return sum(-c / total * math.log(c / total) for s, c in zip(seqs, counts)
                   if c > 0 and tuple(s[:len(prefix)]) == prefix)

    class Scale(LogitsProcessor):
        def __call__(self, input_ids, scores):
            out = torch.full_like(scores, float("-inf"))
            for row in range(scores.shape[0]):
                prefix = tuple(input_ids[row, width:].tolist())
                allowed = sorted(nxt.get(prefix, {EOS}))
                gains = {t: entropy(prefix) - entropy(prefix + (t,)) for t in allowed}
                low, high = min(gains.values()), max(gains.values())
                for t in allowed:
                    factor = 1 - weight * (gains[t] - low) / (high - low + 1e-7) if high > low else 1.0
                    out[row, t] = scores[row, t] * factor
            return out

    return Scale()


@pytest.mark.parametrize("weight", [0.5, 1.0])
def test_igd_beam_search_matches_hf_generate_with_igd_processor(weight):
    seqs = [list(s) for s in sorted({tuple(s) for s in random_sequences(50, V, seed=4, dup_rate=0.0)})]
    trie = make_trie(seqs)
    counts = [float((7 * i) % 5) for i in range(len(seqs))]  # some items never a target
    model = tiny_llama(V, seed=4)
    ids, mask = random_prompts(2, V, seed=4)
    B = 5
    scaling = IGScaling.from_counts(trie, torch.tensor([counts[int(i[1:])] for i in trie.item_ids]), weight)
    ours = beam_search(model, ids, mask, trie, B, rescore=scaling)
    theirs = hf_rescored_beam(model, ids, mask, B, ig_processor(seqs, counts, ids.shape[1], weight),
                              max(map(len, seqs)))
    plain = beam_search(model, ids, mask, trie, B)
    moved = False
    for mine, ref, base in zip(ours, theirs, plain):
        assert [tuple(h.tokens) for h in mine] == [t for t, _ in ref]
        assert [h.score for h in mine] == pytest.approx([s for _, s in ref], abs=1e-4)
        moved |= [h.tokens for h in mine] != [h.tokens for h in base]
    assert moved  # the scaling changes some list here


def test_weight_zero_is_beam_search_and_bad_weights_are_refused():
    seqs = random_sequences(30, V, seed=2)
    trie = make_trie(seqs)
    model = tiny_llama(V, seed=2)
    ids, mask = random_prompts(2, V, seed=2)
    zero = beam_search(model, ids, mask, trie, 4, rescore=IGScaling.from_counts(trie, torch.ones(trie.num_items), 0.0))
    plain = beam_search(model, ids, mask, trie, 4)
    assert [[(h.tokens, round(h.score, 5)) for h in r] for r in zero] == \
        [[(h.tokens, round(h.score, 5)) for h in r] for r in plain]
    for bad in (-0.1, 1.5, "1"):
        with pytest.raises(ConfigError, match="IG weight"):
            IGScaling.from_counts(trie, torch.ones(trie.num_items), bad)


def test_padding_slots_stay_minus_inf_when_token_0_is_a_real_child():
    """Candidate slots past a node's children hold token 0; where 0 is also a child, the slots must stay -inf (not
    -inf times a factor of 0: NaN, which topk would rank first)."""
    from bearrec.decoding.beam_search import children_at

    trie = make_trie([[0, EOS], [6, EOS], [7, 8, EOS]])
    entropy = torch.full((trie.num_nodes,), 5.0, dtype=torch.float64)
    entropy[0], entropy[trie.node_of([0])] = 10.0, 0.0  # child 0 gains the most, by a spread float32 rounds to 1
    scaling = IGScaling(entropy, 1.0)
    nodes = torch.zeros(1, 1, dtype=torch.long)
    tokens, valid = children_at(trie, nodes.reshape(-1), 5)
    llm = torch.where(valid, -torch.rand(1, 5) - 0.1, torch.tensor(float("-inf")))
    out = scaling.scores(trie, llm, nodes, tokens)
    assert not torch.isnan(out).any()
    assert torch.isinf(out[~valid]).all() and torch.isfinite(out[valid]).all()
