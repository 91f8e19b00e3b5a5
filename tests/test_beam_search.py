"""Constrained beam search: parity with HF generate, padding invariance, edge cases, beam thresholds."""
from __future__ import annotations


import pytest
import torch

from bearrec.decoding import beam_search, beam_thresholds, sequence_log_probs
from decoding_fixtures import item_trie as make_trie, random_prompts, random_sequences, tiny_llama
from decoding_oracles import brute_force, dict_trie, reference_beam
from bearrec.errors import ConfigError

V, EOS, PAD = 64, 2, 0


def hf_generate(model, ids, mask, seqs, B, length_penalty, early_stopping):
    """Items (token tuples) and scores from HF generate with a Python prefix_allowed_tokens_fn."""
    nxt, _ = dict_trie(seqs)
    width = ids.shape[1]

    def allowed(batch_id: int, sent: torch.Tensor) -> list[int]:
        return sorted(nxt.get(tuple(sent[width:].tolist()), {EOS}))

    out = model.generate(ids, attention_mask=mask, num_beams=B, num_return_sequences=B, do_sample=False,
                         prefix_allowed_tokens_fn=allowed, length_penalty=length_penalty,
                         early_stopping=early_stopping, max_new_tokens=max(len(s) for s in seqs),
                         pad_token_id=PAD, eos_token_id=EOS, return_dict_in_generate=True, output_scores=True)
    res = []
    for p in range(ids.shape[0]):
        hyps = []
        for r in range(p * B, (p + 1) * B):
            score = float(out.sequences_scores[r]) if B > 1 else None
            gen = out.sequences[r, width:].tolist()
            if score is not None and score < -1e8:
                continue  # HF's placeholder when fewer than B valid hypotheses exist
            hyps.append((tuple(gen[: gen.index(EOS) + 1]), score))
        res.append(hyps)
    return res


def assert_same_as_generate(ours, theirs) -> None:
    """Our hypotheses equal `hf_generate`'s: the same token sequences in the same order, and the same scores."""
    for p, (mine, ref) in enumerate(zip(ours, theirs)):
        assert [tuple(h.tokens) for h in mine] == [t for t, _ in ref], f"prompt {p}"
        for h, (_, s) in zip(mine, ref):
            if s is not None:
                assert h.score == pytest.approx(s, abs=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("B,length_penalty,early_stopping",
                         [(5, 0.0, False), (5, 0.0, "never"), (5, 1.0, "never"), (10, 0.0, "never"),
                          (10, 1.0, "never"), (1, 0.0, False)])
def test_parity_with_hf_generate(seed, B, length_penalty, early_stopping):
    """Same items, order and sequences_scores as HF beam search in score='full' mode.

    Exact parity needs early_stopping="never" (or False when length_penalty == 0): HF's default
    heuristic (False) with a positive length penalty may stop before the canonical result. HF returns
    placeholders (score -1e9) when fewer than B valid hypotheses exist; we return fewer instead, so
    those are dropped before comparing. With B=1 HF runs greedy search (no sequences_scores):
    compared on items, and our score against teacher-forced scoring.
    """
    model = tiny_llama(V, seed=seed)
    seqs = random_sequences(60, V, seed=seed + 10)
    trie = make_trie(seqs)
    ids, mask = random_prompts(3, V, seed=seed)
    ours = beam_search(model, ids, mask, trie, B, length_penalty=length_penalty)
    theirs = hf_generate(model, ids, mask, seqs, B, length_penalty, early_stopping)
    assert_same_as_generate(ours, theirs)
    if B == 1:
        flat = [h for hyps in ours for h in hyps]
        tf = sequence_log_probs(model, ids, mask, [h.tokens for h in flat], trie=trie).totals()
        assert [h.score for h in flat] == pytest.approx(tf, abs=1e-4)


def test_item_ids_cover_duplicate_titles():
    seqs = [[5, 6, EOS], [5, 6, EOS], [7, EOS], [5, EOS]]
    model = tiny_llama(V)
    ids, mask = random_prompts(2, V)
    for hyps in beam_search(model, ids, mask, make_trie(seqs), 4):
        assert sorted(sorted(h.item_ids) for h in hyps) == [["i0", "i1"], ["i2"], ["i3"]]


@pytest.mark.parametrize("score", ["full", "masked"])
def test_beam_wider_than_catalog_is_exhaustive(score):
    """B >= number of titles: every title is returned, in exact probability order; prefixes of others work."""
    seqs = [[5, EOS], [5, 6, EOS], [5, 6, 7, EOS], [8, 9, EOS], [8, EOS], [10, 11, 12, 13, EOS]]
    model = tiny_llama(V, seed=3)
    ids, mask = random_prompts(3, V, seed=3)
    got = beam_search(model, ids, mask, make_trie(seqs), 10, score_mode=score)
    for hyps, ref in zip(got, brute_force(model, ids, mask, seqs, score)):
        assert [tuple(h.tokens) for h in hyps] == [s for _, s in ref]
        assert [h.score for h in hyps] == pytest.approx([s for s, _ in ref], abs=1e-4)


def test_left_padding_gives_the_same_results_as_each_prompt_alone():
    model = tiny_llama(V, seed=4)
    seqs = random_sequences(80, V, seed=4)
    trie = make_trie(seqs)
    ids, mask = random_prompts(4, V, min_len=2, max_len=15, seed=4)
    batched = beam_search(model, ids, mask, trie, 5, score_mode="masked")
    for p in range(ids.shape[0]):
        keep = mask[p].bool()
        alone = beam_search(model, ids[p:p + 1, keep], None, trie, 5, score_mode="masked")[0]
        assert [h.tokens for h in alone] == [h.tokens for h in batched[p]]
        assert [h.score for h in alone] == pytest.approx([h.score for h in batched[p]], abs=1e-4)


def test_bad_inputs():
    model = tiny_llama(V)
    ids, mask = random_prompts(2, V)
    with pytest.raises(ConfigError, match="token id"):
        beam_search(model, ids, mask, make_trie([[V + 3, EOS]]), 2)
    with pytest.raises(ConfigError, match="LEFT"):
        beam_search(model, ids, mask.flip(1), make_trie([[5, EOS]]), 2)
    with pytest.raises(ConfigError, match="score mode"):
        beam_search(model, ids, mask, make_trie([[5, EOS]]), 2, score_mode="nope")


@pytest.mark.parametrize("score", ["full", "masked"])
def test_masked_search_and_thresholds_match_slow_reference(score):
    model = tiny_llama(V, seed=5)
    seqs = random_sequences(50, V, seed=5)
    trie = make_trie(seqs)
    ids, mask = random_prompts(3, V, seed=5)
    B, steps = 4, trie.max_depth + 2
    got = beam_search(model, ids, mask, trie, B, score_mode=score)
    thr = beam_thresholds(model, ids, mask, trie, B, score_mode=score, max_steps=steps)
    assert thr.shape == (3, steps)
    for p in range(3):
        prompt = ids[p, mask[p].bool()].tolist()
        fin, ref_thr, _ = reference_beam(model, prompt, seqs, B, score, steps)
        assert [tuple(h.tokens) for h in got[p]] == [s for _, s in fin]
        assert [h.score for h in got[p]] == pytest.approx([s for s, _ in fin], abs=1e-4)
        assert thr[p].tolist() == pytest.approx(ref_thr, abs=1e-4)
