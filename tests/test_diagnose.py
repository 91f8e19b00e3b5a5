"""Pruning diagnostics against a slow reference beam search and brute-force exact ranking."""
from __future__ import annotations

import pytest

from decoding_fixtures import item_trie, random_prompts, random_sequences, tiny_llama
from decoding_oracles import brute_force, reference_beam
from bearrec.diagnose import RowDiagnosis, diagnose_batch, summarize

V = 48


def row(in_top, returned, step=None, outside=None, ranks=(1,), certified=True):
    return RowDiagnosis(in_exact_top_b=in_top, certified=certified, returned=returned, pruned_step=step,
                        token_outside_top_b=outside, ranks=list(ranks), log_prob=-1.0)


def test_summary_counts():
    rows = [row(True, True, ranks=(1, 2)), row(True, False, 2, True, ranks=(1, 12, 1)),
            row(True, False, 3, False, ranks=(1, 1, 3), certified=False), row(False, False, ranks=(11,)),
            row(False, True, ranks=(4,))]
    s = summarize(rows, num_beams=10)
    assert s["pruning_rate@10"] == pytest.approx(2 / 3)
    assert s["pruning_rate_certified@10"] == pytest.approx(1 / 2)
    assert s["n_in_exact_top_b"] == 3 and s["n_pruned"] == 2 and s["n_returned"] == 2
    assert s["certified_fraction"] == pytest.approx(4 / 5)
    assert s["pruned_token_outside_top_b_share"] == pytest.approx(1 / 2)
    assert s["pruned_step_histogram"] == {"2": 1, "3": 1}
    assert s["positive_token_rank_histogram"] == {"1": 5, "2": 1, "3": 1, "4": 1, ">10": 2}
    assert summarize([row(False, False)], 10)["pruning_rate@10"] is None  # no row in the exact top-B: no rate (strict JSON)


@pytest.mark.parametrize("score", ["full", "masked"])
def test_diagnosis_matches_slow_reference(score):
    # A flat random model spreads probability, so beam search prunes some exact top-B positives.
    model = tiny_llama(V, seed=3, init_range=0.8)
    seqs = random_sequences(60, V, seed=3, max_len=4, dup_rate=0.0, prefix_rate=0.0)
    trie = item_trie(seqs)
    ids, mask = random_prompts(6, V, seed=3)
    B = 3
    ranked = brute_force(model, ids, mask, seqs, score)
    # the positive of each prompt: alternate between its exact top-B and just below it
    positives = [list(ranked[p][p % (2 * B)][1]) for p in range(6)]
    targets = [f"i{seqs.index(s)}" for s in positives]
    got = diagnose_batch(model, ids, mask, trie, positives, targets, B, score_mode=score, max_expansions=10_000)
    for p, d in enumerate(got):
        assert d.certified
        exact = [s for _, s in ranked[p][:B]]
        assert d.in_exact_top_b == (tuple(positives[p]) in exact)
        prompt = ids[p, mask[p].bool()].tolist()
        finished, _, kept = reference_beam(model, prompt, seqs, B, score, trie.max_depth)
        assert d.returned == (tuple(positives[p]) in [s for _, s in finished])
        assert d.log_prob == pytest.approx(dict((s, lp) for lp, s in ranked[p])[tuple(positives[p])], abs=1e-4)
        if d.in_exact_top_b and not d.returned:
            y = tuple(positives[p])
            # the first step whose kept prefixes lack the positive's prefix (or the last step)
            want = next((t + 1 for t in range(len(y) - 1) if y[: t + 1] not in kept[t]), len(y))
            assert d.pruned_step == want
            assert d.token_outside_top_b == (d.ranks[want - 1] > B)
        else:
            assert d.pruned_step is None


def test_some_positive_is_pruned_in_the_reference_setting():
    """Guard that the test above exercises the pruned branch for at least one mode."""
    model = tiny_llama(V, seed=3, init_range=0.8)
    seqs = random_sequences(60, V, seed=3, max_len=4, dup_rate=0.0, prefix_rate=0.0)
    trie = item_trie(seqs)
    ids, mask = random_prompts(6, V, seed=3)
    pruned = 0
    for score in ("full", "masked"):
        ranked = brute_force(model, ids, mask, seqs, score)
        positives = [list(ranked[p][p % 6][1]) for p in range(6)]
        targets = [f"i{seqs.index(s)}" for s in positives]
        rows = diagnose_batch(model, ids, mask, trie, positives, targets, 3, score_mode=score, max_expansions=10_000)
        pruned += sum(r.pruned_step is not None for r in rows)
    assert pruned > 0


def test_an_interrupted_diagnosis_resumes_from_its_finished_batches(small_run, tmp_path, monkeypatch):
    import json

    import bearrec.diagnose as diagnose
    from run_fixtures import copy_run

    run = copy_run(small_run, tmp_path)
    whole = diagnose.diagnose_run(run, split="valid", num_beams=3, limit=5, batch_size=2, max_expansions=100,
                                  output=tmp_path / "whole.json", progress=False)
    real, calls = diagnose.diagnose_batch, []

    def batch(*args, stop_at=None, **kwargs):
        calls.append(1)
        if len(calls) == stop_at:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    out = tmp_path / "d.json"
    monkeypatch.setattr(diagnose, "diagnose_batch", lambda *a, **k: batch(*a, stop_at=3, **k))
    with pytest.raises(KeyboardInterrupt):
        diagnose.diagnose_run(run, split="valid", num_beams=3, limit=5, batch_size=2, max_expansions=100, output=out,
                              progress=False)
    assert not out.exists() and len((tmp_path / "d.json.partial").read_text().splitlines()) == 1 + 4
    calls.clear()
    monkeypatch.setattr(diagnose, "diagnose_batch", lambda *a, **k: batch(*a, **k))
    again = diagnose.diagnose_run(run, split="valid", num_beams=3, limit=5, batch_size=2, max_expansions=100, output=out,
                                  progress=False)
    assert len(calls) == 1 and again == whole  # only the last batch was left
    assert json.loads(out.read_text()) == json.loads((tmp_path / "whole.json").read_text())
    assert not (tmp_path / "d.json.partial").exists()


def test_pruning_from_predictions_agrees_with_the_diagnosis(small_run, tmp_path):
    """The rate from a run's beam and exact predictions equals the one `diagnose_run` measures on the same rows."""
    from bearrec.diagnose import diagnose_run, pruning_from_predictions
    from bearrec.errors import DataError
    from bearrec.evaluate import evaluate
    from bearrec.files import read_jsonl
    from bearrec.run_dir import RunDir
    from run_fixtures import copy_run

    run = copy_run(small_run, tmp_path)
    want = diagnose_run(run, split="valid", num_beams=3, max_expansions=5000, output=tmp_path / "d.json", progress=False)
    assert want["lists_from"] == {"beam": "beam search",  # nothing decoded yet: searched
                                  "exact": "count of the entries above each positive"}
    decoded = {}
    for search in ("beam", "exact"):
        evaluate(run, split="valid", num_beams=3, search=search, max_expansions=5000)
        decoded[search] = list(read_jsonl(RunDir(run).artefact("predictions", "valid", search=search)))
    beam, exact = decoded["beam"], decoded["exact"]
    got = pruning_from_predictions(beam, exact)
    assert got["n_rows"] == want["n_rows"] == len(beam)
    assert (got["n_in_exact_top_k"], got["n_pruned"]) == (want["n_in_exact_top_b"], want["n_pruned"])
    assert got["pruning_rate@3"] == want["pruning_rate@3"] and got["certified_fraction"] == 1.0
    with pytest.raises(DataError, match="no beam search prediction.*Fix: decode the same rows"):
        pruning_from_predictions(beam[:-1], exact)


def test_a_diagnosis_reads_the_lists_from_the_runs_predictions(small_run, tmp_path, monkeypatch):
    """With the split decoded by beam and exact search, diagnose_run reuses those lists (no search run again, beam
    thresholds only for batches with a pruned row) and finds what searching finds; predictions of another width
    are not used."""
    import json

    import bearrec.diagnose as diagnose
    from bearrec.evaluate import evaluate
    from run_fixtures import copy_run

    run = copy_run(small_run, tmp_path)
    kw = dict(split="valid", num_beams=2, limit=12, max_expansions=5000, batch_size=3, progress=False)
    searched = diagnose.diagnose_run(run, output=tmp_path / "searched.json", **kw)
    for search in ("beam", "exact"):
        evaluate(run, split="valid", num_beams=3, search=search, max_expansions=5000)  # another width: not used
    again = diagnose.diagnose_run(run, output=tmp_path / "again.json", **kw)
    assert again["lists_from"] == {"beam": "beam search", "exact": "count of the entries above each positive"}
    evaluate(run, split="valid", num_beams=2, search="beam")
    monkeypatch.setattr(diagnose, "beam_search", lambda *a, **k: pytest.fail("the beam lists searched again"))
    beam_only = diagnose.diagnose_run(run, output=tmp_path / "beam-only.json", **kw)  # beam scores seed the counts
    assert beam_only.pop("lists_from") == {"beam": "predictions-valid.jsonl",
                                           "exact": "count of the entries above each positive"}
    assert beam_only == {k: v for k, v in searched.items() if k != "lists_from"}
    evaluate(run, split="valid", num_beams=2, search="exact", max_expansions=5000)
    for name in ("beam_search", "certified_count_above"):
        monkeypatch.setattr(diagnose, name, lambda *a, **k: pytest.fail("a list searched again"))
    thresholds, real = [], diagnose.beam_thresholds
    monkeypatch.setattr(diagnose, "beam_thresholds", lambda *a, **k: thresholds.append(1) or real(*a, **k))
    read = diagnose.diagnose_run(run, output=tmp_path / "read.json", **kw)
    assert read.pop("lists_from") == {"beam": "predictions-valid.jsonl", "exact": "predictions-exact-valid.jsonl"}
    assert read == {k: v for k, v in searched.items() if k != "lists_from"}
    assert json.loads((tmp_path / "read.json").read_text())["rows"] == \
        json.loads((tmp_path / "searched.json").read_text())["rows"]
    rows = json.loads((tmp_path / "searched.json").read_text())["rows"]
    assert len(thresholds) == sum(any(r["pruned_step"] for r in rows[i:i + 3]) for i in range(0, len(rows), 3))


def test_known_lists_give_the_same_diagnosis_and_thresholds_only_where_a_row_is_pruned(monkeypatch):
    """In the reference setting (some positives pruned), diagnosing with the lists given equals searching them, and
    the beam thresholds are computed for the pruned rows' batches only."""
    import bearrec.diagnose as diagnose

    model = tiny_llama(V, seed=3, init_range=0.8)
    seqs = random_sequences(60, V, seed=3, max_len=4, dup_rate=0.0, prefix_rate=0.0)
    trie = item_trie(seqs)
    ids, mask = random_prompts(6, V, seed=3)
    ranked = brute_force(model, ids, mask, seqs, "full")
    positives = [list(ranked[p][p % 6][1]) for p in range(6)]
    targets = [f"i{seqs.index(s)}" for s in positives]
    searched = diagnose_batch(model, ids, mask, trie, positives, targets, 3, max_expansions=10_000)
    calls, real = [], diagnose.beam_thresholds
    monkeypatch.setattr(diagnose, "beam_thresholds", lambda *a, **k: calls.append(1) or real(*a, **k))
    for name in ("beam_search", "certified_count_above"):
        monkeypatch.setattr(diagnose, name, lambda *a, **k: pytest.fail("a list searched again"))
    for p, want in enumerate(searched):
        beam = [[([targets[p]] if want.returned else ["not-the-target"], None)]]
        got, = diagnose.diagnose_batch(model, ids[p:p + 1], mask[p:p + 1], trie, positives[p:p + 1], targets[p:p + 1],
                                       3, beam_lists=beam, exact_hits=[(want.in_exact_top_b, want.certified)])
        assert (got.pruned_step, got.token_outside_top_b, got.ranks) == (want.pruned_step, want.token_outside_top_b,
                                                                          want.ranks)
        assert got.log_prob == pytest.approx(want.log_prob, abs=1e-4)
    assert len(calls) == sum(r.pruned_step is not None for r in searched) > 0


def test_pruning_from_predictions_counts_rows_by_hand():
    from bearrec.diagnose import pruning_from_predictions
    from bearrec.errors import DataError

    def rec(index, target, items, certified=True):
        return {"index": index, "target": target, "k": 2, "certified": certified,
                "recommendations": [{"item_ids": list(i)} for i in items]}

    exact = [rec(0, "a", [("a",), ("b",)]), rec(1, "a", [("c",), ("a", "d")]), rec(2, "e", [("c",), ("d",)]),
             rec(3, "b", [("b",), ("c",)], certified=False)]
    beam = [rec(0, "a", [("b",), ("a",)]), rec(1, "a", [("c",), ("d",)]), rec(2, "e", [("e",), ("d",)]),
            rec(3, "b", [("c",), ("d",)])]
    got = pruning_from_predictions(beam, exact)  # in the exact top 2: rows 0, 1 (a shares its entry), 3; pruned: 1, 3
    assert got == {"pruning_rate@2": pytest.approx(2 / 3), "n_rows": 4, "n_in_exact_top_k": 3, "n_pruned": 2,
                   "certified_fraction": 0.75}
    assert pruning_from_predictions(beam, [rec(2, "e", [("c",), ("d",)])])["pruning_rate@2"] is None  # none in top
    with pytest.raises(DataError, match="no exact-search predictions"):
        pruning_from_predictions(beam, [])


@pytest.mark.parametrize("seed", [0, 3])
def test_in_bf16_a_clear_exact_top_1_positive_is_not_counted_above_itself(seed):
    """The search scores the positive's own entry along another path than teacher forcing; in bf16 the two differ by
    more than TIE_TOLERANCE, and the positive must still not count as outranking itself."""
    import torch

    from bearrec.decoding import exact_top_k

    model = tiny_llama(V, seed=seed, init_range=0.3).to(torch.bfloat16)
    seqs = random_sequences(80, V, seed=seed, max_len=5)
    trie = item_trie(seqs)
    ids, mask = random_prompts(6, V, seed=seed)
    top = exact_top_k(model, ids, mask, trie, 2, max_expansions=10**6)
    rows = [p for p in range(6) if top[p].items[0].score - top[p].items[1].score > 0.05]
    got = diagnose_batch(model, ids[rows], mask[rows], trie, [top[p].items[0].tokens for p in rows],
                         [top[p].items[0].item_ids[0] for p in rows], 1, max_expansions=10**6)
    assert len(rows) >= 3 and all(d.in_exact_top_b and d.certified for d in got)
