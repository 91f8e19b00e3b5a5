"""The beam-search step loop in its accelerator mode (`static_shapes`, forced here on the CPU): what the model is fed
has a shape fixed by (prompts, beams, step) whatever beams are alive, and the loop asks the device for a value only at
its periodic finished-check (no .item(), .tolist(), nonzero() or boolean indexing in a step). Its results equal the
slow reference (tests/decoding_oracles.py), HF generate and the CPU mode (which feeds only live slots), in both cache
layouts; the CPU mode's own parity tests are test_beam_search.py and test_beam_search_layouts.py."""
from __future__ import annotations

import importlib
import math
import sys

import pytest
import torch

from bearrec.decoding import beam_search
from decoding_fixtures import item_trie, random_prompts, random_sequences, tiny_llama
from decoding_oracles import brute_force, reference_beam
from test_beam_search import assert_same_as_generate, hf_generate

bs = importlib.import_module("bearrec.decoding.beam_search")
V, EOS = 64, 2
# the functions a step runs (the search loop itself, and the trie look-ups and model feeds it calls)
STEP_FUNCTIONS = {"_search", "children_at", "step", "item_counts", "num_children", "padded_children", "children"}
WATCHED = ["item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero", "cpu", "numpy"]


@pytest.fixture()
def static(monkeypatch):
    """The accelerator mode of the step loop, on this CPU."""
    monkeypatch.setattr(bs, "static_shapes", lambda device: True)


@pytest.fixture()
def host_reads(monkeypatch):
    """Every call of a device-to-host read made directly by a step function of beam_search.py or trie.py:
    (function, method) pairs; boolean-mask indexing and tensor-count repeat_interleave (shapes read from data) too."""
    calls: list[tuple[str, str]] = []

    def from_step() -> str | None:
        frame = sys._getframe(2)
        name, path = frame.f_code.co_name, frame.f_code.co_filename.replace("\\", "/")
        if name in STEP_FUNCTIONS and path.endswith(("decoding/beam_search.py", "bearrec/trie.py")):
            return name
        return None

    def watch(method: str):
        original = getattr(torch.Tensor, method)

        def wrapper(self, *args, **kwargs):
            where = from_step()
            if where:
                calls.append((where, method))
            return original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, method, wrapper)

    for method in WATCHED:
        watch(method)
    getitem = torch.Tensor.__getitem__

    def indexed(self, index):
        parts = index if isinstance(index, tuple) else (index,)
        if any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts) and (where := from_step()):
            calls.append((where, "boolean index"))
        return getitem(self, index)

    monkeypatch.setattr(torch.Tensor, "__getitem__", indexed)
    repeat = torch.repeat_interleave

    def repeated(input, repeats=None, *args, **kwargs):
        if isinstance(repeats, torch.Tensor) and (where := from_step()):
            calls.append((where, "repeat_interleave"))
        return repeat(input, repeats, *args, **kwargs)

    monkeypatch.setattr(torch, "repeat_interleave", repeated)
    return calls


def narrow_trie():
    """Two first tokens under B = 6 beams, then wide: early steps have fewer live beams than slots."""
    seqs = [[5] + [t, u, EOS] for t in range(6, 14) for u in (20, 21)] + [[7, t, EOS] for t in range(30, 40)]
    return seqs, item_trie(seqs)


@pytest.mark.parametrize("tree", [True, False])
def test_the_model_is_fed_fixed_shapes(monkeypatch, static, tree):
    seqs, trie = narrow_trie()
    model = tiny_llama(V, seed=1)
    if not tree:
        monkeypatch.setattr(bs, "tree_attention", lambda m: False)
    P, B = 3, 6
    fed: list[tuple] = []
    model.register_forward_pre_hook(lambda m, args, kwargs: fed.append(tuple(kwargs["input_ids"].shape)),
                                    with_kwargs=True)
    for seed in (0, 1):
        fed.clear()
        ids, mask = random_prompts(P, V, min_len=4, max_len=9, seed=seed)
        beam_search(model, ids, mask, trie, B)
        steps = fed[1:]  # after the prefill
        assert steps and all(shape == ((P, B) if tree else (P * B, 1)) for shape in steps), fed


@pytest.mark.parametrize("tree", [True, False])
@pytest.mark.parametrize("score", ["full", "masked"])
def test_no_host_reads_inside_a_step(monkeypatch, static, host_reads, tree, score):
    model = tiny_llama(V, seed=2)
    seqs = random_sequences(60, V, seed=12, max_len=9, prefix_rate=0.3)
    trie = item_trie(seqs)
    if not tree:
        monkeypatch.setattr(bs, "tree_attention", lambda m: False)
    ids, mask = random_prompts(3, V, seed=2)
    B, steps = 4, trie.max_depth
    host_reads.clear()
    got = beam_search(model, ids, mask, trie, B, score_mode=score)
    checks = [c for c in host_reads if c == ("_search", "__bool__")]
    assert checks == host_reads, f"reads inside a step besides the finished-check: {host_reads}"
    assert len(checks) <= math.ceil(steps / bs.CHECK_EVERY)
    for p in range(ids.shape[0]):  # and the result is still the reference's
        fin, _, _ = reference_beam(model, ids[p, mask[p].bool()].tolist(), seqs, B, score, steps)
        assert [tuple(h.tokens) for h in got[p]] == [s for _, s in fin]
        assert [h.score for h in got[p]] == pytest.approx([s for s, _ in fin], abs=1e-4)


def test_the_finished_check_changes_nothing(monkeypatch, static):
    """Looking every step or never gives the same lists (a finished prompt's state no longer changes)."""
    model = tiny_llama(V, seed=3)
    seqs = random_sequences(80, V, seed=3, max_len=7)
    trie = item_trie(seqs)
    ids, mask = random_prompts(4, V, seed=3)
    found = {}
    for every in (1, 4, 1000):
        monkeypatch.setattr(bs, "CHECK_EVERY", every)
        found[every] = [[(tuple(h.tokens), round(h.score, 4)) for h in row] for row in beam_search(model, ids, mask,
                                                                                                   trie, 5)]
    assert found[1] == found[4] == found[1000]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("B,length_penalty,early_stopping", [(5, 0.0, False), (5, 1.0, "never"), (10, 0.0, "never"),
                                                             (1, 0.0, False)])
def test_static_mode_matches_hf_generate(static, seed, B, length_penalty, early_stopping):
    model = tiny_llama(V, seed=seed)
    seqs = random_sequences(60, V, seed=seed + 10)
    ids, mask = random_prompts(3, V, seed=seed)
    ours = beam_search(model, ids, mask, item_trie(seqs), B, length_penalty=length_penalty)
    assert_same_as_generate(ours, hf_generate(model, ids, mask, seqs, B, length_penalty, early_stopping))


@pytest.mark.parametrize("score", ["full", "masked"])
def test_static_mode_wider_than_the_catalog_is_exhaustive(static, score):
    seqs = [[5, EOS], [5, 6, EOS], [5, 6, 7, EOS], [8, 9, EOS], [8, EOS], [10, 11, 12, 13, EOS]]
    model = tiny_llama(V, seed=3)
    ids, mask = random_prompts(3, V, seed=3)
    for hyps, ref in zip(beam_search(model, ids, mask, item_trie(seqs), 10, score_mode=score),
                         brute_force(model, ids, mask, seqs, score)):
        assert [tuple(h.tokens) for h in hyps] == [s for _, s in ref]
        assert [h.score for h in hyps] == pytest.approx([s for s, _ in ref], abs=1e-4)


@pytest.mark.parametrize("tree", [True, False])
@pytest.mark.parametrize("score", ["full", "masked"])
def test_static_and_cpu_modes_agree_with_thresholds(monkeypatch, tree, score):
    """Both modes give the same lists and per-step thresholds (what BEAR's training reads), with prefix titles."""
    model = tiny_llama(V, seed=4)
    seqs = random_sequences(70, V, seed=24, prefix_rate=0.3)
    trie = item_trie(seqs)
    ids, mask = random_prompts(4, V, min_len=2, max_len=14, seed=24)
    if not tree:
        monkeypatch.setattr(bs, "tree_attention", lambda m: False)
    found = []
    for mode in (False, True):
        monkeypatch.setattr(bs, "static_shapes", lambda device, mode=mode: mode)
        hyps = beam_search(model, ids, mask, trie, 6, score_mode=score)
        thr = bs.beam_thresholds(model, ids, mask, trie, 6, score_mode=score, max_steps=trie.max_depth + 1)
        found.append(([[tuple(h.tokens) for h in row] for row in hyps], [[h.score for h in row] for row in hyps], thr))
    (cpu_items, cpu_scores, cpu_thr), (gpu_items, gpu_scores, gpu_thr) = found
    assert cpu_items == gpu_items
    for a, b in zip(cpu_scores, gpu_scores):
        assert a == pytest.approx(b, abs=1e-4)
    torch.testing.assert_close(cpu_thr, gpu_thr, atol=1e-4, rtol=0)


def test_children_at_matches_padded_children():
    seqs, trie = narrow_trie()
    nodes = torch.tensor([0, 1, -1, trie.node_of([5]), trie.node_of([7, 30]), trie.node_of([7, 30, EOS])])
    tokens, valid = bs.children_at(trie, nodes, 12)
    ref_tokens, ref_valid = trie.padded_children(nodes)
    width = ref_tokens.shape[1]
    assert torch.equal(valid[:, :width], ref_valid) and not valid[:, width:].any()
    assert torch.equal(torch.where(valid[:, :width], tokens[:, :width], 0), torch.where(ref_valid, ref_tokens, 0))
    assert bs.fanout_by_depth(trie, 6) == [2, 10, 2, 1, 1, 1]
