"""Whole-catalog exact scoring with tree attention, against teacher-forced scoring of every item (brute force)."""
from __future__ import annotations

import pytest

from bearrec.decoding.catalog import catalog_log_probs, catalog_top_k, certified_top_k
from decoding_fixtures import item_trie, random_prompts, random_sequences, tiny_llama
from decoding_oracles import brute_force
from bearrec.errors import ConfigError

V = 64


@pytest.mark.parametrize("score", ["full", "masked"])
@pytest.mark.parametrize("chunk_size, attn", [(1, "sdpa"), (5, "eager"), (512, "sdpa")])
def test_every_item_score_equals_teacher_forced_scoring(score, chunk_size, attn):
    model = tiny_llama(V, seed=3, attn_implementation=attn)
    seqs = random_sequences(50, V, seed=3, max_len=6)
    trie = item_trie(seqs)
    ids, mask = random_prompts(3, V, seed=3)
    node_lp = catalog_log_probs(model, ids, mask, trie, score_mode=score, chunk_size=chunk_size)
    for p, ref in enumerate(brute_force(model, ids, mask, seqs, score)):
        for total, seq in ref:
            assert float(node_lp[p, trie.node_of(seq)]) == pytest.approx(total, abs=1e-4), (p, seq)


@pytest.mark.parametrize("score", ["full", "masked"])
def test_top_k_is_the_brute_force_order_and_always_certified(score):
    model = tiny_llama(V, seed=4)
    seqs = random_sequences(60, V, seed=4)
    ids, mask = random_prompts(4, V, seed=4)
    got = catalog_top_k(model, ids, mask, item_trie(seqs), 7, score_mode=score, chunk_size=16)
    for res, ref in zip(got, brute_force(model, ids, mask, seqs, score)):
        assert res.certified
        assert [tuple(h.tokens) for h in res.items] == [s for _, s in ref[:7]]
        assert [h.score for h in res.items] == pytest.approx([s for s, _ in ref[:7]], abs=1e-4)


def test_attention_without_custom_masks_and_bad_chunks_are_refused():
    model = tiny_llama(V, seed=0)
    ids, mask = random_prompts(1, V)
    trie = item_trie(random_sequences(5, V))
    with pytest.raises(ConfigError, match="chunk_size"):
        catalog_log_probs(model, ids, mask, trie, chunk_size=0)
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ConfigError, match="attn_implementation='sdpa'"):
        catalog_log_probs(model, ids, mask, trie)


@pytest.mark.parametrize("score", ["full", "masked"])
def test_rows_best_first_search_cannot_certify_are_scored_whole(score):
    model = tiny_llama(V, seed=5)
    seqs = random_sequences(60, V, seed=5)
    ids, mask = random_prompts(3, V, seed=5)
    got = certified_top_k(model, ids, mask, item_trie(seqs), 5, score_mode=score, max_expansions=2)
    inner = len({tuple(s[:j]) for s in seqs for j in range(len(s))})  # prefixes with a next token: inner nodes
    for res, ref in zip(got, brute_force(model, ids, mask, seqs, score)):
        assert res.certified and res.expansions == 2 + inner
        assert [tuple(h.tokens) for h in res.items] == [s for _, s in ref[:5]]


@pytest.mark.parametrize("score", ["full", "masked"])
def test_counts_best_first_search_cannot_settle_are_read_from_the_whole_catalog(score):
    from bearrec.decoding import certified_count_above

    model = tiny_llama(V, seed=6)
    seqs = random_sequences(60, V, seed=6)
    ids, mask = random_prompts(3, V, seed=6)
    ranked = brute_force(model, ids, mask, seqs, score)
    floors = [ref[r][0] - 1e-3 for ref, r in zip(ranked, (0, 3, 20))]  # just below the entry ranked r
    got = certified_count_above(model, ids, mask, item_trie(seqs), 5, floors, score_mode=score, max_expansions=1)
    assert [r.count for r in got] == [1, 4, 5] and all(r.certified for r in got)
    inner = len({tuple(s[:j]) for s in seqs for j in range(len(s))})
    assert got[0].expansions == 1 + inner  # "fewer than 5" needs every prefix above the floor: the catalog pass
    mine = item_trie(seqs).node_of(ranked[0][0][1])
    again = certified_count_above(model, ids[:1], mask[:1], item_trie(seqs), 5, floors[:1], exclude=[mine],
                                  score_mode=score, max_expansions=1)
    assert again[0].count == 0  # the excluded entry is not counted by the catalog pass either
