"""Diverse beam search and D3 through the Recommender, evaluate and the command line: the same lists as the decoding
functions, the settings recorded in each row, a file of other settings decoded again, and misplaced options refused."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bearrec.decoding import D3, beam_search, diverse_beam_search
from bearrec.errors import ConfigError
from bearrec.evaluate import evaluate, predictions_are_current
from bearrec.recommend import Recommender
from bearrec.searches import SearchOptions

from test_recommend import run_dir  # noqa: F401  (the module's tiny trained run, a fixture)


class FixedScorer:
    """An ID-based model stand-in: a fixed random score per (history length, item), over a shuffled catalog order."""

    def __init__(self, items: list[str], seed: int = 0):
        rng = np.random.default_rng(seed)
        self.item_ids = list(rng.permutation(items))
        self.table = rng.normal(size=(8, len(items))).astype(np.float32) * 3

    def score(self, histories):
        return np.stack([self.table[len(h) % 8] for h in histories])


def test_d3_recommendations_are_beam_search_with_the_assistant_in_trie_order(run_dir):  # noqa: F811
    plain = Recommender.from_run(run_dir, device="cpu")
    scorer = FixedScorer(list(plain.items))
    rec = Recommender.from_run(run_dir, device="cpu", search="d3",
                               options=SearchOptions(assistant=scorer, assistant_weight=0.4, assistant_name="fixed"))
    history = ["it1", "it2"]
    out = rec.recommend(history, k=5)
    ids = torch.tensor([rec.encode(history)])
    column = {item: j for j, item in enumerate(scorer.item_ids)}
    scores = torch.from_numpy(scorer.score([history])[:, [column[i] for i in rec.trie.item_ids]])
    want = beam_search(rec.model, ids, None, rec.trie, 5, score_mode="masked",
                       rescore=D3.with_assistant(rec.trie, scores, 0.4))[0]
    assert [o["item_ids"] for o in out] == [h.item_ids for h in want]
    assert [o["score"] for o in out] == pytest.approx([h.score for h in want])
    # the assistant moves the list: with weight 0.4 it is not plain beam search's here
    assert [o["item_ids"] for o in out] != [o["item_ids"] for o in plain.recommend(history, k=5)]


def test_diverse_recommendations_are_diverse_beam_search(run_dir):  # noqa: F811
    rec = Recommender.from_run(run_dir, device="cpu", search="diverse",
                               options=SearchOptions(groups=2, diversity_penalty=2.0))
    out = rec.recommend(["it4"], k=6)
    ids = torch.tensor([rec.encode(["it4"])])
    want = diverse_beam_search(rec.model, ids, None, rec.trie, 6, groups=2, diversity_penalty=2.0,
                               score_mode="masked")[0]
    assert [o["item_ids"] for o in out] == [h.item_ids for h in want]
    assert len({tuple(o["item_ids"]) for o in out}) == len(out)  # never the same entry twice


def test_igd_recommendations_scale_by_the_training_targets_information_gain(run_dir):  # noqa: F811
    from collections import Counter

    from bearrec.decoding import IGScaling

    rec = Recommender.from_run(run_dir, device="cpu", search="igd", options=SearchOptions(ig_weight=0.7))
    out = rec.recommend(["it2", "it5"], k=5)
    counts = Counter(row.target for row in rec.dataset.train)
    scaling = IGScaling.from_counts(rec.trie, torch.tensor([float(counts.get(i, 0)) for i in rec.trie.item_ids]), 0.7)
    ids = torch.tensor([rec.encode(["it2", "it5"])])
    want = beam_search(rec.model, ids, None, rec.trie, 5, score_mode="masked", rescore=scaling)[0]
    assert [o["item_ids"] for o in out] == [h.item_ids for h in want]
    assert [o["score"] for o in out] == pytest.approx([h.score for h in want])


def test_an_assistant_missing_catalog_items_is_refused(run_dir):  # noqa: F811
    plain = Recommender.from_run(run_dir, device="cpu")
    scorer = FixedScorer(list(plain.items)[:-2])
    with pytest.raises(ConfigError, match="does not score 2 items"):
        Recommender.from_run(run_dir, device="cpu", search="d3",
                             options=SearchOptions(assistant=scorer, assistant_weight=0.1))


def test_an_assistant_fitted_on_another_dataset_is_refused(run_dir):  # noqa: F811
    """A kept baseline says which dataset it was fitted on; the Recommender asks it before any decoding."""
    class Foreign(FixedScorer):
        def check_dataset(self, dataset):
            raise ConfigError("sasrec-run: was fitted on another dataset. Fix: use a baseline run of this dataset.")

    items = list(Recommender.from_run(run_dir, device="cpu").items)
    with pytest.raises(ConfigError, match="another dataset"):
        Recommender.from_run(run_dir, device="cpu", search="d3",
                             options=SearchOptions(assistant=Foreign(items), assistant_weight=0.1))


def test_rows_record_the_settings_and_other_settings_decode_again(run_dir, tmp_path):  # noqa: F811
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "log_history.json").write_text("[]")
    scorer = FixedScorer(list(Recommender.from_run(run, device="cpu").items))
    first = SearchOptions(assistant=scorer, assistant_weight=0.2, assistant_name="fixed")
    evaluate(run, split="valid", num_beams=4, search="d3", options=first)
    path = run / "predictions-d3-valid.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert {(r["search"], r["beams"], r["assistant"], r["assistant_weight"]) for r in rows} == {("d3", 4, "fixed", 0.2)}
    assert predictions_are_current(path, len(rows), 4, "d3", first.facts("d3"))
    second = SearchOptions(assistant=scorer, assistant_weight=0.5, assistant_name="fixed")
    assert not predictions_are_current(path, len(rows), 4, "d3", second.facts("d3"))
    evaluate(run, split="valid", num_beams=4, search="d3", options=second)
    assert {json.loads(line)["assistant_weight"] for line in path.read_text().splitlines()} == {0.5}
    # beam search's file is not a D3 file, nor the other way round
    assert not predictions_are_current(path, len(rows), 4, "beam")


@pytest.mark.parametrize("argv, message", [
    (["--groups", "2"], "--groups applies to --search diverse"),
    (["--search", "d3", "--diversity-penalty", "1"], "--diversity-penalty applies to --search diverse"),
    (["--search", "diverse", "--assistant-weight", "0.1"], "--assistant-weight applies to --search d3"),
    (["--search", "d3", "--assistant-weight", "0.1"], "go together"),
    (["--search", "d3", "--assistant", "x", "--assistant-weight", "1.5"], "assistant weight"),
    (["--search", "diverse", "--diversity-penalty", "-1"], "diversity penalty"),
    (["--search", "beam", "--ig-weight", "0.5"], "--ig-weight applies to --search igd"),
    (["--search", "igd", "--ig-weight", "2"], "IG weight"),
])
def test_misplaced_or_bad_options_are_refused(run_dir, argv, message, capsys):  # noqa: F811
    from bearrec.cli import main

    assert main(["recommend", str(run_dir), "--limit", "1", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Fix:" in err and "Traceback" not in err
