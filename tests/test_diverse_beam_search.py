"""Diverse beam search over the trie: equal to a slow Python reference (batched, left-padded, every cache layout), to
`beam_search` with one group, to a transcription of HF 4.x group beam search on a toy where the trie constrains
nothing; bad settings refused; and the penalty makes the groups pick different first tokens."""
from __future__ import annotations

import importlib
import itertools
import math

import pytest
import torch

from bearrec.decoding import beam_search, diverse_beam_search
from bearrec.errors import ConfigError
from decoding_fixtures import item_trie, random_prompts, random_sequences, tiny_llama
from decoding_oracles import dict_trie

bs = importlib.import_module("bearrec.decoding.beam_search")  # the module (the package exports a function of that name)
V, EOS, PAD = 64, 2, 0


def next_log_probs(model, prompt: list[int], prefix: tuple, allowed: list[int], score_mode: str) -> list[float]:
    """Log-probs of the `allowed` next tokens after prompt + prefix, from one full forward (no cache)."""
    logits = model(torch.tensor([prompt + list(prefix)])).logits[0, -1].float()
    if score_mode == "full":
        return torch.log_softmax(logits, -1)[allowed].tolist()
    return torch.log_softmax(logits[allowed], -1).tolist()


def distinct_best(finished: list[tuple[float, tuple]], limit: int) -> list[tuple[tuple, float]]:
    """(tokens, score) best first, each token sequence once with its best score, at most `limit`."""
    out, seen = [], set()
    for score, seq in sorted(finished, key=lambda c: -c[0]):
        if seq not in seen:
            seen.add(seq)
            out.append((seq, score))
    return out[:limit]


@torch.no_grad()
def reference_diverse(model, prompt: list[int], seqs: list[list[int]], B: int, G: int, lam: float, score_mode: str,
                      steps: int, stop: str = "hf") -> list[tuple[tuple, float]]:
    """Slow diverse beam search for one prompt: Python lists, one uncached forward per beam, groups one by one.

    Group g's candidate = beam score + log-prob - lam * (tokens the beams of groups < g keep at this step); the 2k best
    (k = B/G); complete ones among the first k join the group's finished list (its k best); the k best extendable ones
    are its beams. A group stops when nothing is extendable, or its list is full and its best candidate is no better
    than the list's worst; a stopped group keeps no beams, so penalises nothing. (`stop`: 'hf', that rule; 'never',
    a group runs while it has beams; 'kept', it stops when its best beam is no better than its worst hypothesis.)"""
    nxt, complete = dict_trie(seqs)
    k = B // G
    beams = [[(0.0, ())] for _ in range(G)]
    finished: list[list[tuple[float, tuple]]] = [[] for _ in range(G)]
    stopped = [False] * G
    for _ in range(steps):
        taken: list[int] = []
        for g in range(G):
            if stopped[g]:
                continue
            cands = []
            for score, prefix in beams[g]:
                allowed = sorted(nxt[prefix])
                for tok, lp in zip(allowed, next_log_probs(model, prompt, prefix, allowed, score_mode)):
                    cands.append((score + (lp - lam * taken.count(tok)), prefix + (tok,)))
            cands = sorted(cands, key=lambda c: -c[0])[: 2 * k]
            finished[g] = sorted(finished[g] + [c for c in cands[:k] if c[1] in complete], key=lambda c: -c[0])[:k]
            beams[g] = [c for c in cands if c[1] in nxt][:k]
            taken += [prefix[-1] for _, prefix in beams[g]]
            best = {"hf": cands[0][0] if cands else -math.inf, "never": math.inf,
                    "kept": beams[g][0][0] if beams[g] else -math.inf}[stop]
            stopped[g] = not beams[g] or (len(finished[g]) == k and best <= finished[g][-1][0])
        if all(stopped):
            break
    return distinct_best([c for f in finished for c in f], B)


def set_layout(monkeypatch, model, layout: str) -> None:
    """'tree': one cache row per prompt (sdpa); 'eager': the same with eager attention; 'flat': one cache row per
    beam slot; 'static': the accelerator loop (every slot fed, fixed shapes) forced on this CPU."""
    if layout == "eager":
        model.set_attn_implementation("eager")
    # both searches start through beam_search.start_search, which picks the layout
    if layout == "flat":
        monkeypatch.setattr(bs, "tree_attention", lambda m: False)
    if layout == "static":
        monkeypatch.setattr(bs, "static_shapes", lambda device: True)


def as_pairs(hyps) -> list[list[tuple[tuple, float]]]:
    return [[(tuple(h.tokens), h.score) for h in row] for row in hyps]


def assert_same(mine: list[tuple[tuple, float]], ref: list[tuple[tuple, float]], what: str) -> None:
    assert [t for t, _ in mine] == [t for t, _ in ref], what
    assert [s for _, s in mine] == pytest.approx([s for _, s in ref], abs=1e-4), what


@pytest.mark.parametrize("B,G,lam,score,layout", [
    (6, 3, 1.0, "full", "tree"), (6, 2, 0.5, "masked", "tree"), (8, 4, 3.0, "masked", "flat"),
    (4, 4, 0.2, "full", "static"), (6, 3, 0.0, "full", "eager"), (6, 6, 2.0, "masked", "static"),
    (4, 2, 1.5, "full", "flat")])
def test_matches_the_slow_reference(monkeypatch, B, G, lam, score, layout):
    """Same items, order and scores as the reference, on a trie with duplicate titles and titles prefixing others,
    for four left-padded prompts of different lengths decoded in one batch."""
    seed = B + G
    model = tiny_llama(V, seed=seed)
    seqs = random_sequences(80, V, seed=seed + 30, prefix_rate=0.3)
    trie = item_trie(seqs)
    ids, mask = random_prompts(4, V, min_len=2, max_len=14, seed=seed + 30)
    set_layout(monkeypatch, model, layout)
    got = as_pairs(diverse_beam_search(model, ids, mask, trie, B, groups=G, diversity_penalty=lam, score_mode=score))
    items = {tuple(s) for s in seqs}
    for p in range(ids.shape[0]):
        ref = reference_diverse(model, ids[p, mask[p].bool()].tolist(), seqs, B, G, lam, score, trie.max_depth)
        assert_same(got[p], ref, f"prompt {p}")
        assert len({t for t, _ in got[p]}) == len(got[p]) and all(t in items for t, _ in got[p])
        assert 0 < len(got[p]) <= B


@pytest.mark.parametrize("seed,score,init,n_items,prefix_rate,max_len,other", [
    (8, "full", 0.8, 40, 0.6, 6, "never"), (21, "full", 0.8, 40, 0.6, 6, "never"),
    (2, "masked", 0.5, 80, 0.5, 5, "kept")])
def test_a_group_stops_when_its_best_candidate_cannot_enter(seed, score, init, n_items, prefix_rate, max_len, other):
    """Cases where when a group stops changes the result (a running group's beams penalise the later groups): the
    stop rule is HF's (full finished list, best candidate no better than its worst), not the `other` rule."""
    model = tiny_llama(V, seed=seed, init_range=init)
    seqs = random_sequences(n_items, V, seed=seed + 30, prefix_rate=prefix_rate, max_len=max_len)
    trie = item_trie(seqs)
    ids, mask = random_prompts(4, V, min_len=2, max_len=14, seed=seed + 30)
    got = as_pairs(diverse_beam_search(model, ids, mask, trie, 6, groups=3, diversity_penalty=1.0, score_mode=score))
    changed = 0
    for p in range(ids.shape[0]):
        prompt = ids[p, mask[p].bool()].tolist()
        ref = reference_diverse(model, prompt, seqs, 6, 3, 1.0, score, trie.max_depth)
        assert_same(got[p], ref, f"prompt {p}")
        alt = reference_diverse(model, prompt, seqs, 6, 3, 1.0, score, trie.max_depth, stop=other)
        changed += [t for t, _ in alt] != [t for t, _ in ref] or \
            [s for _, s in alt] != pytest.approx([s for _, s in ref], abs=1e-4)
    assert changed, f"the {other!r} rule gives the same lists here: the case does not test the stop rule"


@pytest.mark.parametrize("layout", ["tree", "flat", "static"])
@pytest.mark.parametrize("score", ["full", "masked"])
@pytest.mark.parametrize("lam", [0.0, 5.0])
def test_one_group_is_beam_search(monkeypatch, layout, score, lam):
    """G = 1: no earlier group, so no penalty; the result is beam_search's, item for item and score for score."""
    model = tiny_llama(V, seed=3)
    trie = item_trie(random_sequences(70, V, seed=3, prefix_rate=0.3))
    ids, mask = random_prompts(4, V, min_len=2, max_len=14, seed=3)
    set_layout(monkeypatch, model, layout)
    for B in (1, 5):
        plain = as_pairs(beam_search(model, ids, mask, trie, B, score_mode=score))
        mine = as_pairs(diverse_beam_search(model, ids, mask, trie, B, groups=1, diversity_penalty=lam,
                                            score_mode=score))
        assert mine == plain


def test_no_penalty_groups_coincide_and_duplicates_are_dropped():
    """λ = 0 with G groups: every group runs the same k = B/G beam search, so each item is found G times; it is
    returned once (HF would repeat it), leaving beam_search's k-beam list."""
    model = tiny_llama(V, seed=5)
    trie = item_trie(random_sequences(70, V, seed=5))
    ids, mask = random_prompts(3, V, seed=5)
    plain = as_pairs(beam_search(model, ids, mask, trie, 2))
    mine = as_pairs(diverse_beam_search(model, ids, mask, trie, 6, groups=3, diversity_penalty=0.0))
    for p, (a, b) in enumerate(zip(mine, plain)):
        assert_same(a, b, f"prompt {p}")


# --- HF 4.x group beam search, transcribed, on a toy where the trie constrains nothing ---

TOY_V, TOY_LEN = 10, 3  # vocabulary of the toy model; tokens HF generates (max_new_tokens)


@torch.no_grad()
def hf_group_beam_search(model, prompt: list[int], B: int, G: int, lam: float, max_new_tokens: int,
                         ) -> tuple[list[tuple[float, tuple]], bool]:
    """HF transformers 4.x `_group_beam_search` (BeamSearchScorer, early_stopping="never", length_penalty 0, Hamming
    diversity) for one prompt, unconstrained, with no cache, written from its algorithm: every group's hypotheses
    (score, tokens up to and with EOS), best first (HF returns the first B), and whether HF's pad quirk applied (a
    stopped group feeds PAD tokens, which still count in the penalty of a later, running group).

    HF: every group starts with k = B/G copies of the prompt, all but the first at score -1e9; each step, group by
    group, scores = log_softmax - lam * bincount(tokens the beams of groups < g took this step) + beam score; the 2k
    best of k * vocab; an EOS among the first k joins the group's hypotheses (kept to k), the first k others are
    its beams; the group is done when it holds k hypotheses and its best candidate is no better than their worst.
    At max_new_tokens, the beams of groups not done are added as hypotheses; all groups' hypotheses, best first."""
    k = B // G
    seqs: list[tuple] = [()] * B
    scores = [0.0 if i % k == 0 else -1e9 for i in range(B)]
    current = [PAD] * B
    hyps: list[list[tuple[float, tuple]]] = [[] for _ in range(G)]
    done = [False] * G
    quirk = False
    for _ in range(max_new_tokens):
        logp = [torch.log_softmax(model(torch.tensor([prompt + list(s)])).logits[0, -1].double(), -1) for s in seqs]
        for g in range(G):
            group = range(g * k, (g + 1) * k)
            if done[g]:
                for i in group:
                    seqs[i], scores[i], current[i] = seqs[group[0]] + (PAD,), 0.0, PAD
                quirk |= any(not d for d in done[g + 1:])
                continue
            freq = torch.bincount(torch.tensor(current[: g * k], dtype=torch.long), minlength=TOY_V).double()
            table = torch.stack([logp[i] - lam * freq + scores[i] for i in group])
            top_s, top_i = table.view(-1).topk(2 * k)
            beams = []
            for rank, (s, j) in enumerate(zip(top_s.tolist(), top_i.tolist())):
                beam, tok = group[j // TOY_V], j % TOY_V
                if tok == EOS:
                    if rank < k:
                        hyps[g] = sorted(hyps[g] + [(s, seqs[beam] + (tok,))], key=lambda c: -c[0])[:k]
                else:
                    beams.append((s, seqs[beam] + (tok,)))
                if len(beams) == k:
                    break
            for i, (s, seq) in zip(group, beams):
                seqs[i], scores[i], current[i] = seq, s, seq[-1]
            done[g] = len(hyps[g]) == k and hyps[g][-1][0] >= top_s[0].item()
        if all(done):
            break
    for g in range(G):
        if not done[g]:
            for i in range(g * k, (g + 1) * k):
                hyps[g] = sorted(hyps[g] + [(scores[i], seqs[i])], key=lambda c: -c[0])[:k]
    return sorted([c for h in hyps for c in h], key=lambda c: -c[0]), quirk


def every_sequence_trie():
    """All sequences of up to TOY_LEN non-EOS tokens of the toy vocabulary, each followed by EOS: for TOY_LEN steps
    every token is allowed, then only EOS; under masked scores that last EOS costs nothing, so the search equals
    unconstrained generation of TOY_LEN tokens whose unfinished beams are kept at the end, HF's finalisation."""
    body = [t for t in range(TOY_V) if t != EOS]
    seqs = [list(s) + [EOS] for n in range(TOY_LEN + 1) for s in itertools.product(body, repeat=n)]
    return item_trie(seqs)


@pytest.mark.parametrize("B,G,lam", [(4, 2, 1.0), (6, 3, 0.7), (6, 2, 2.0), (4, 4, 0.5), (6, 3, 0.0)])
def test_agrees_with_hf_group_beam_search_where_the_trie_constrains_nothing(B, G, lam):
    model = tiny_llama(TOY_V, seed=11, init_range=0.5)
    trie = every_sequence_trie()
    ids, mask = random_prompts(4, TOY_V, min_len=2, max_len=8, seed=11)
    got = diverse_beam_search(model, ids, mask, trie, B, groups=G, diversity_penalty=lam, score_mode="masked")
    repeats, lengths = 0, set()
    for p in range(ids.shape[0]):
        hyps, quirk = hf_group_beam_search(model, ids[p, mask[p].bool()].tolist(), B, G, lam, TOY_LEN)
        assert not quirk, "a stopped group's PAD tokens counted in HF: the documented difference, not compared here"
        # HF's list with our one change, each sequence once (EOS completions are never penalised, so here every
        # group finds the empty title); HF's unfinished beams lack the final EOS our trie's items carry
        strip = [(s, seq[:-1] if seq[-1:] == (EOS,) else seq) for s, seq in hyps]
        theirs = distinct_best(strip, B)
        repeats += len({seq for _, seq in hyps[:B]}) < len(hyps[:B])
        mine = [(tuple(h.tokens[:-1]), h.score) for h in got[p]]
        assert_same(mine, theirs, f"prompt {p}")
        lengths |= {len(seq) for seq, _ in theirs}
    assert TOY_LEN in lengths and len(lengths) > 1, "compared lists should hold finished and unfinished HF beams"
    if lam == 0.0:  # the groups coincide: HF's own first B hypotheses repeat sequences, ours never do
        assert repeats == ids.shape[0]


def test_transformers_no_longer_ships_group_beam_search(monkeypatch):
    """transformers 5 moved group beam search to the Hub repo transformers-community/group-beam-search
    (trust_remote_code, a download): there is no HF implementation here to compare with, and ours never calls
    generate."""
    from transformers.generation import logits_process

    assert not hasattr(logits_process, "HammingDiversityLogitsProcessor")
    model = tiny_llama(TOY_V, seed=1)
    ids = torch.tensor([[3, 4, 5]])
    with pytest.raises(ValueError, match="group-beam-search"):
        model.generate(ids, num_beams=4, num_beam_groups=2, diversity_penalty=1.0, max_new_tokens=2, do_sample=False)

    def refuse(*args, **kwargs):
        raise AssertionError("diverse_beam_search called generate")

    monkeypatch.setattr(model, "generate", refuse)
    assert diverse_beam_search(model, ids, None, every_sequence_trie(), 4, groups=2, diversity_penalty=1.0)


@pytest.mark.parametrize("B,G,lam,needle", [(6, 4, 1.0, "groups=4"), (4, 0, 1.0, "groups=0"), (2, 4, 1.0, "groups=4"),
                                            (4, 2, -0.5, "-0.5"), (4, 2, math.nan, "nan"), (0, 1, 1.0, "num_beams")])
def test_bad_settings_are_refused(B, G, lam, needle):
    model = tiny_llama(V, seed=0)
    ids, mask = random_prompts(2, V, seed=0)
    with pytest.raises(ConfigError) as err:
        diverse_beam_search(model, ids, mask, item_trie([[5, EOS]]), B, groups=G, diversity_penalty=lam)
    assert needle in str(err.value) and "Fix: " in str(err.value) and str(err.value).endswith(".")


def test_the_penalty_spreads_the_first_tokens():
    """Six first tokens, each with ten second tokens: plain beam search spends its beams on a few first tokens (the
    near-duplicates of a recommendation list); with a strong penalty each group starts with another first token."""
    seqs = [[f, s, EOS] for f in range(3, 9) for s in range(10, 20)]
    trie = item_trie(seqs)
    model = tiny_llama(V, seed=2, init_range=0.6)
    ids, mask = random_prompts(6, V, seed=2)
    plain = beam_search(model, ids, mask, trie, 6)
    diverse = diverse_beam_search(model, ids, mask, trie, 6, groups=6, diversity_penalty=100.0)
    firsts = [[len({h.tokens[0] for h in row}) for row in rows] for rows in (plain, diverse)]
    assert min(firsts[0]) <= 3, f"the toy should give plain beam search near-duplicates: {firsts[0]}"
    assert firsts[1] == [6] * len(firsts[1]), firsts
