"""D3 decoding: the assistant's subtree masses against brute force, and D3 beam search against HF generate with D3's
logits processor written on HF's public LogitsProcessor API, and against brute-force scoring of every title."""
from __future__ import annotations

import math

import pytest
import torch

from bearrec.decoding import D3, beam_search
from bearrec.decoding.d3 import GHOST_LOG_PROB, subtree_log_mass
from bearrec.errors import ConfigError
from decoding_fixtures import item_trie as make_trie, random_prompts, random_sequences, tiny_llama
from decoding_oracles import dict_trie, hf_rescored_beam

V, EOS, PAD = 64, 2, 0


def node_prefixes(trie) -> dict[int, tuple]:
    """Every node's token prefix, found by walking the trie from the root."""
    out, todo = {0: ()}, [0]
    while todo:
        node = todo.pop()
        for tok in trie.allowed(out[node]):
            child = trie.node_of(out[node] + (tok,))
            out[child] = out[node] + (tok,)
            todo.append(child)
    return out


def test_subtree_mass_is_the_sum_over_items_below_each_node():
    seqs = random_sequences(40, V, seed=7)
    trie = make_trie(seqs)
    probs = torch.softmax(torch.randn(3, trie.num_items, generator=torch.Generator().manual_seed(0)), -1)
    got = subtree_log_mass(trie, probs).exp()
    sequence = {f"i{i}": tuple(s) for i, s in enumerate(seqs)}
    for node, prefix in node_prefixes(trie).items():
        below = [j for j, item in enumerate(trie.item_ids) if sequence[item][:len(prefix)] == prefix]
        assert got[:, node] == pytest.approx(probs[:, below].sum(1), rel=1e-5, abs=1e-7)
    assert got[:, 0] == pytest.approx(torch.ones(3), rel=1e-5)  # the root holds the whole catalog


def test_assistant_token_log_probs_add_up_to_the_item_log_prob():
    """Along a title, the assistant's token log-probs telescope to log P(item) (titles unique, none a prefix)."""
    seqs = [[5, EOS], [6, 7, EOS], [6, 8, 9, EOS], [10, 11, 12, EOS]]
    trie = make_trie(seqs)
    logits = torch.tensor([[0.5, -1.0, 2.0, 0.1]])
    d3 = D3.with_assistant(trie, logits, 0.5)
    want = torch.log_softmax(logits.double(), -1)[0]
    for i, s in enumerate(seqs):
        total, node = 0.0, torch.zeros(1, 1, dtype=torch.long)
        for tok in s:
            total += float(d3.assistant_log_probs(trie, node, torch.tensor([[tok]]))[0, 0])
            node = trie.step(node, torch.tensor([[tok]]))
        assert total == pytest.approx(float(want[i]), abs=1e-5)


def d3_processor(trie, seqs, width: int, item_scores: torch.Tensor, weight: float, B: int):
    """D3 as an HF LogitsProcessor (HF's public API): the mix of the masked log-probs with the assistant's token
    log-probs, each computed here from plain Python sets of the titles below each prefix."""
    from transformers import LogitsProcessor

    nxt, _ = dict_trie(seqs)
    probs = torch.softmax(item_scores.double(), -1)

    class Mix(LogitsProcessor):
        def __call__(self, input_ids, scores):
            out = torch.full_like(scores, float("-inf"))
            for row in range(scores.shape[0]):
                prefix = tuple(input_ids[row, width:].tolist())
                prompt = row // B
                below = lambda p: sum(float(probs[prompt, j]) for j, s in enumerate(seqs)  # noqa: E731
                                      if tuple(s[:len(p)]) == p)
                for tok in nxt.get(prefix, {EOS}):
                    llm = float(scores[row, tok])
                    llm = 0.0 if llm >= GHOST_LOG_PROB else llm
                    above, here = below(prefix), below(prefix + (tok,))  # 0 past a title's end (rows HF
                    helper = math.log(here) - math.log(above) if above and here else 0.0  # keeps but never uses)
                    out[row, tok] = (1 - weight) * llm + weight * helper
            return out

    return Mix()


@pytest.mark.parametrize("weight", [0.0, 0.3, 0.8])
def test_d3_beam_search_matches_hf_generate_with_d3_processor(weight):
    """With unique titles (one item per sequence) D3 beam search returns HF generate's items, order and scores when
    D3's step scores enter HF's beam search as a logits processor (length_penalty 0, early_stopping "never")."""
    seqs = sorted({tuple(s) for s in random_sequences(50, V, seed=3, dup_rate=0.0)})
    seqs = [list(s) for s in seqs]
    trie = make_trie(seqs)
    model = tiny_llama(V, seed=3)
    ids, mask = random_prompts(2, V, seed=3)
    scores = torch.randn(2, len(seqs), generator=torch.Generator().manual_seed(1)) * 2
    B = 5
    d3 = D3.with_assistant(trie, scores[:, [int(i[1:]) for i in trie.item_ids]], weight) if weight else D3()
    ours = beam_search(model, ids, mask, trie, B, rescore=d3)
    theirs = hf_rescored_beam(model, ids, mask, B, d3_processor(trie, seqs, ids.shape[1], scores, weight, B),
                              max(map(len, seqs)))
    for mine, ref in zip(ours, theirs):
        assert [tuple(h.tokens) for h in mine] == [t for t, _ in ref]
        assert [h.score for h in mine] == pytest.approx([s for _, s in ref], abs=1e-4)


def test_without_an_assistant_d3_only_leaves_out_ghost_tokens():
    """D3() scores each title as plain beam search does, less the log-probs of its ghost tokens (B > titles, so both
    searches return every title; the scores are compared title by title)."""
    seqs = random_sequences(12, V, seed=5)
    trie = make_trie(seqs)
    model = tiny_llama(V, seed=5)
    with torch.no_grad():
        model.lm_head.weight.mul_(30)  # peaked distributions: some tokens are ghosts
    ids, mask = random_prompts(2, V, seed=5)
    plain = beam_search(model, ids, mask, trie, 20, score_mode="masked")
    d3 = beam_search(model, ids, mask, trie, 20, score_mode="masked", rescore=D3())
    gained = 0
    for a, b in zip(plain, d3):
        by_tokens = {tuple(h.tokens): h.score for h in b}
        assert set(by_tokens) == {tuple(h.tokens) for h in a}
        for h in a:
            assert by_tokens[tuple(h.tokens)] >= h.score - 1e-6  # leaving out adds at most 0
            assert by_tokens[tuple(h.tokens)] - h.score <= -GHOST_LOG_PROB * len(h.tokens) + 1e-6
            gained += by_tokens[tuple(h.tokens)] > h.score
    assert gained  # the model is peaked enough that some title has a ghost token


def test_bad_weight_is_refused():
    trie = make_trie([[5, EOS]])
    for bad in (-0.1, 1.0, "0.5", True):
        with pytest.raises(ConfigError, match="assistant weight"):
            D3.with_assistant(trie, torch.zeros(1, 1), bad)
