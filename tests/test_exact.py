"""Exact top-K by best-first search and teacher-forced scoring, against brute force over every item."""
from __future__ import annotations

import pytest
import torch

from bearrec.decoding import exact_top_k, sequence_log_probs
from decoding_fixtures import item_trie as make_trie, random_prompts, random_sequences, tiny_llama
from decoding_oracles import brute_force
from bearrec.errors import DataError

V, EOS = 64, 2


@torch.no_grad()
def slow_scores(model, prompt, seq, score):
    """Per-token log-probs of `seq` after `prompt`, one unpadded forward, with the allowed sets from a set scan."""
    logits = model(torch.tensor([prompt + seq])).logits[0].float()
    out = []
    for j, tok in enumerate(seq):
        step = logits[len(prompt) - 1 + j]
        allowed = sorted({s[j] for s in SEQS if s[:j] == seq[:j] and len(s) > j})
        lp = torch.log_softmax(step, -1)[tok] if score == "full" else \
            torch.log_softmax(step[allowed], -1)[allowed.index(tok)]
        rank = 1 + sum(float(step[a]) > float(step[tok]) for a in allowed)
        out.append((float(lp), rank))
    return out


SEQS = random_sequences(40, V, seed=7)


@pytest.mark.parametrize("score", ["full", "masked"])
def test_sequence_log_probs_match_slow_reference(score):
    model = tiny_llama(V, seed=7)
    trie = make_trie(SEQS)
    ids, mask = random_prompts(5, V, seed=7)
    seqs = [SEQS[i] for i in (0, 3, 9, 17, 30)]
    got = sequence_log_probs(model, ids, mask, seqs, trie=trie, score_mode=score)
    for p in range(5):
        ref = slow_scores(model, ids[p, mask[p].bool()].tolist(), seqs[p], score)
        assert got.log_probs[p].tolist() == pytest.approx([lp for lp, _ in ref], abs=1e-4)
        assert got.ranks[p].tolist() == [r for _, r in ref]
        assert (got.vocab_ranks[p] >= got.ranks[p]).all()
    with pytest.raises(DataError, match="not a path"):
        sequence_log_probs(model, ids[:1], mask[:1], [[1, EOS]], trie=trie)


@pytest.mark.parametrize("score", ["full", "masked"])
@pytest.mark.parametrize("seed", [0, 1])
def test_exact_top_k_matches_brute_force(score, seed):
    model = tiny_llama(V, seed=seed)
    seqs = random_sequences(60, V, seed=seed)
    ids, mask = random_prompts(4, V, seed=seed)
    k = 7
    got = exact_top_k(model, ids, mask, make_trie(seqs), k, score_mode=score, nodes_per_step=3)
    for res, ref in zip(got, brute_force(model, ids, mask, seqs, score)):
        assert res.certified
        assert [tuple(h.tokens) for h in res.items] == [s for _, s in ref[:k]]
        assert [h.score for h in res.items] == pytest.approx([s for s, _ in ref[:k]], abs=1e-4)
        assert res.expansions < len({tuple(s[:j]) for s in seqs for j in range(len(s))})


@pytest.mark.parametrize("score", ["full", "masked"])
@pytest.mark.parametrize("tree", [True, False])
def test_long_single_child_chains_are_scored_exactly_in_either_attention_layout(score, tree, monkeypatch):
    """Titles with a shared head and long distinct tails (the chains exact search takes in one call), with tree
    attention and with the re-run-the-prefix layout flash attention needs."""
    import random

    import bearrec.decoding.exact as exact

    if not tree:
        monkeypatch.setattr(exact, "tree_attention", lambda model: False)
    rng = random.Random(3)
    heads = [[rng.randrange(3, V) for _ in range(2)] for _ in range(4)]
    seqs = [heads[i % 4] + [rng.randrange(3, V) for _ in range(rng.randint(1, 9))] + [EOS] for i in range(30)]
    model = tiny_llama(V, seed=4)
    ids, mask = random_prompts(3, V, seed=4)
    trie = make_trie(seqs)
    got = exact_top_k(model, ids, mask, trie, 6, score_mode=score, nodes_per_step=2)
    for res, ref in zip(got, brute_force(model, ids, mask, seqs, score)):
        assert res.certified
        assert [tuple(h.tokens) for h in res.items] == [s for _, s in ref[:6]]
        assert [h.score for h in res.items] == pytest.approx([s for s, _ in ref[:6]], abs=1e-4)
    # masked: a chain is one expansion, and a path that never branches none, so few expansions; full: node by node
    inner = len({tuple(s[:j]) for s in seqs for j in range(len(s))})
    assert all(r.expansions < (inner / 3 if score == "masked" else inner) for r in got)


@pytest.mark.parametrize("tree", [True, False])
def test_an_item_inside_a_single_child_chain_is_found(tree, monkeypatch):
    """Sequences without EOS can end where another continues: a chain must stop at such an item, not pass it."""
    import bearrec.decoding.exact as exact

    if not tree:
        monkeypatch.setattr(exact, "tree_attention", lambda model: False)
    seqs = [[1, 5], [1, 5, 6, 7], [1, 5, 6, 8], [9, 10], [9, 11, 12, 13, 14]]
    model = tiny_llama(V, seed=6)
    ids, mask = random_prompts(2, V, seed=6)
    for score in ("masked", "full"):
        got = exact_top_k(model, ids, mask, make_trie(seqs), 5, score_mode=score)
        for res, ref in zip(got, brute_force(model, ids, mask, seqs, score)):
            assert res.certified and [tuple(h.tokens) for h in res.items] == [s for _, s in ref]


def test_small_catalog_and_budget():
    model = tiny_llama(V, seed=2)
    seqs = [[5, EOS], [5, 6, EOS], [8, 9, 10, EOS], [5, 6, EOS]]
    ids, mask = random_prompts(2, V, seed=2)
    whole = exact_top_k(model, ids, mask, make_trie(seqs), 10)
    assert all(r.certified and len(r.items) == 3 for r in whole)
    assert sorted(whole[0].items[0].item_ids + whole[0].items[1].item_ids + whole[0].items[2].item_ids) == \
        ["i0", "i1", "i2", "i3"]
    cut = exact_top_k(model, ids, mask, make_trie(random_sequences(60, V, seed=3)), 5, max_expansions=2)
    assert all(not r.certified and r.expansions <= 2 for r in cut)
    for r in cut:
        assert [h.score for h in r.items] == sorted((h.score for h in r.items), reverse=True)


@pytest.mark.parametrize("tree", [True, False])
@pytest.mark.parametrize("seed,k,step", [(0, 10, 1), (1, 4, 3), (2, 25, 64), (3, 1, 5)])
def test_steps_that_pass_over_complete_items_stay_exact(tree, seed, k, step, monkeypatch):
    """Many expansions under full scores (a nearly flat model), with complete items queued among them: a step that
    passes over items pending expansions may outrank still emits them in the brute-force order, in either layout."""
    import bearrec.decoding.exact as exact

    if not tree:
        monkeypatch.setattr(exact, "tree_attention", lambda model: False)
    model = tiny_llama(V, seed=seed, init_range=0.02)
    seqs = random_sequences(150, V, seed=seed, max_len=6)
    ids, mask = random_prompts(3, V, seed=seed)
    got = exact_top_k(model, ids, mask, make_trie(seqs), k, score_mode="full", max_expansions=10**6, nodes_per_step=step)
    for res, ref in zip(got, brute_force(model, ids, mask, seqs, "full")):
        assert res.certified
        assert [h.score for h in res.items] == pytest.approx([s for s, _ in ref[:k]], abs=1e-4)
        assert [tuple(h.tokens) for h in res.items] == [s for _, s in ref[:k]]


def test_a_complete_item_does_not_cut_a_step_short():
    """Steps keep expanding past a queued item (emitted later), so a search takes fewer forwards: 13 before."""
    model = tiny_llama(V, seed=8)
    seqs = random_sequences(400, V, seed=3, max_len=8)
    ids, mask = random_prompts(2, V, seed=8)
    calls = []
    model.register_forward_pre_hook(lambda module, args: calls.append(1))
    got = exact_top_k(model, ids, mask, make_trie(seqs), 10, score_mode="full", max_expansions=10**6, nodes_per_step=32)
    assert all(r.certified for r in got)
    assert len(calls) <= 8


@pytest.mark.parametrize("tree", [True, False])
@pytest.mark.parametrize("score", ["full", "masked"])
@pytest.mark.parametrize("seed,k,step", [(0, 10, 1), (1, 3, 4), (2, 6, 32)])
def test_count_above_equals_brute_force_and_known_entries_are_not_counted_twice(tree, score, seed, k, step,
                                                                               monkeypatch):
    """Entries above a floor set at, between and below the brute-force ranking's scores, counted up to k, with some
    entries above it given as known."""
    import random

    import bearrec.decoding.exact as exact
    from bearrec.decoding import count_above

    if not tree:
        monkeypatch.setattr(exact, "tree_attention", lambda model: False)
    model = tiny_llama(V, seed=seed, init_range=0.3)
    seqs = random_sequences(80, V, seed=seed, max_len=5)
    trie = make_trie(seqs)
    rng = random.Random(seed)
    ids, mask = random_prompts(6, V, seed=seed)
    ranked = brute_force(model, ids, mask, seqs, score)
    floors, known, want = [], [], []
    for p, ref in enumerate(ranked):
        r = [0, 1, k - 1, k, k + 3, len(ref) - 1][p]  # the floor sits just above the entry ranked r
        floor = ref[r][0] + 1e-4 if p % 2 else (ref[r][0] + ref[min(r + 1, len(ref) - 1)][0]) / 2
        above = [s for total, s in ref if total > floor]
        floors.append(floor)
        known.append([trie.node_of(s) for s in rng.sample(above, min(len(above), rng.randint(0, k)))])
        want.append(min(k, len(above)))
    got = count_above(model, ids, mask, trie, k, floors, known=known, score_mode=score, max_expansions=10**6,
                      nodes_per_step=step)
    assert [r.count for r in got] == want and all(r.certified for r in got)


def test_counting_far_down_the_ranking_costs_less_than_proving_the_top_k():
    """An item ranked low needs only k entries found above it; known entries answer with no model call."""
    from bearrec.decoding import count_above

    model = tiny_llama(V, seed=8, init_range=0.1)
    seqs = random_sequences(300, V, seed=8, max_len=7)
    trie = make_trie(seqs)
    ids, mask = random_prompts(3, V, seed=8)
    ranked = brute_force(model, ids, mask, seqs, "full")
    low = [ref[100][0] for ref in ranked]
    counted = count_above(model, ids, mask, trie, 10, low, score_mode="full", max_expansions=10**6, nodes_per_step=1)
    proved = exact_top_k(model, ids, mask, trie, 10, score_mode="full", max_expansions=10**6, nodes_per_step=1)
    assert all(c.count == 10 and c.certified for c in counted)
    assert sum(c.expansions for c in counted) < sum(r.expansions for r in proved)
    calls = []
    model.register_forward_pre_hook(lambda module, args: calls.append(1))
    given = [[trie.node_of(s) for _, s in ref[:10]] for ref in ranked]
    assert [c.count for c in count_above(model, ids, mask, trie, 10, low, known=given)] == [10, 10, 10]
    assert calls == []


@pytest.mark.parametrize("score", ["full", "masked"])
def test_count_above_with_items_at_inner_nodes_and_an_excluded_entry(score):
    """Titles without EOS, so some items end where others go on (an entry with children); the excluded entry is
    never counted, whatever its score."""
    from bearrec.decoding import count_above

    seqs = [s[:-1] for s in random_sequences(80, V, seed=5, max_len=5, prefix_rate=0.4) if len(s) > 1]
    trie = make_trie(seqs)
    assert any(int(trie.item_counts(torch.tensor([n]))) and trie.allowed(s) for s in seqs
               for n in [trie.node_of(s)])  # the case this test is for
    model = tiny_llama(V, seed=5)
    ids, mask = random_prompts(4, V, seed=5)
    ranked = brute_force(model, ids, mask, seqs, score)
    floors = [ref[r][0] - 1e-3 for ref, r in zip(ranked, (0, 2, 6, 30))]  # just below the entry ranked r
    top = [trie.node_of(ref[0][1]) for ref in ranked]  # each prompt's best entry, above every floor
    got = count_above(model, ids, mask, trie, 8, floors, exclude=top, score_mode=score, max_expansions=10**6,
                      nodes_per_step=3)
    assert [(r.count, r.certified) for r in got] == [(0, True), (2, True), (6, True), (8, True)]
