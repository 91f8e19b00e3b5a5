"""Decoding gives the same results with tree attention (sdpa and eager masks) as with per-beam / per-node cache copies."""
from __future__ import annotations

import pytest
import torch

import importlib
from bearrec.decoding import beam_search, beam_thresholds, exact_top_k
from decoding_fixtures import item_trie as make_trie, random_prompts, random_sequences, tiny_llama
from decoding_oracles import reference_beam

V = 64
bs = importlib.import_module("bearrec.decoding.beam_search")  # the module (the package exports a function of that name)


def _run(model, ids, mask, trie, B, score, steps):
    """(items and scores per prompt, thresholds) of one search."""
    hyps = beam_search(model, ids, mask, trie, B, score_mode=score)
    thr = beam_thresholds(model, ids, mask, trie, B, score_mode=score, max_steps=steps)
    return [[(tuple(h.tokens), h.score) for h in row] for row in hyps], thr


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("score", ["full", "masked"])
@pytest.mark.parametrize("B", [1, 3, 8])
def test_tree_attention_matches_per_beam_caches_and_reference(monkeypatch, seed, score, B):
    model = tiny_llama(V, seed=seed)
    seqs = random_sequences(70, V, seed=seed + 20, prefix_rate=0.3)
    trie = make_trie(seqs)
    ids, mask = random_prompts(4, V, min_len=2, max_len=14, seed=seed + 20)
    steps = trie.max_depth + 1
    assert bs.tree_attention(model)
    tree = _run(model, ids, mask, trie, B, score, steps)
    model.set_attn_implementation("eager")
    eager = _run(model, ids, mask, trie, B, score, steps)
    monkeypatch.setattr(bs, "tree_attention", lambda m: False)
    flat = _run(model, ids, mask, trie, B, score, steps)
    for got in (eager, flat):
        for mine, ref in zip(tree[0], got[0]):
            assert [t for t, _ in mine] == [t for t, _ in ref]
            assert [s for _, s in mine] == pytest.approx([s for _, s in ref], abs=1e-4)
        torch.testing.assert_close(tree[1], got[1], atol=1e-4, rtol=0)
    for p in range(ids.shape[0]):
        fin, ref_thr, _ = reference_beam(model, ids[p, mask[p].bool()].tolist(), seqs, B, score, steps)
        assert [t for t, _ in tree[0][p]] == [s for _, s in fin]
        torch.testing.assert_close(tree[1][p], torch.tensor(ref_thr, dtype=tree[1].dtype), atol=1e-4, rtol=0)


@pytest.mark.parametrize("score", ["full", "masked"])
def test_exact_top_k_same_with_node_columns_and_copied_caches(monkeypatch, score):
    """Exact top-K: one cache column per expanded node (sdpa, eager) = prefixes re-run on copied caches."""
    ex = importlib.import_module("bearrec.decoding.exact")
    model = tiny_llama(V, seed=7)
    trie = make_trie(random_sequences(80, V, seed=7, prefix_rate=0.3))
    ids, mask = random_prompts(3, V, min_len=2, max_len=14, seed=7)

    def run() -> list[tuple]:
        res = exact_top_k(model, ids, mask, trie, 6, score_mode=score, nodes_per_step=4)
        return [(r.certified, r.expansions, [tuple(h.tokens) for h in r.items], [h.score for h in r.items])
                for r in res]

    tree = run()
    model.set_attn_implementation("eager")
    eager = run()
    monkeypatch.setattr(ex, "tree_attention", lambda m: False)
    copied = run()
    for got in (eager, copied):
        for a, b in zip(tree, got):
            assert a[:3] == b[:3]
            assert a[3] == pytest.approx(b[3], abs=1e-4)
