"""The method registry: one declaration per objective and baseline, read by the config, the trainer and reports.

The toy objective below is defined here, as a user would in methods/toy.py, and registered with one line (the
monkeypatched OBJECTIVES tuple): the config, the name grammar, the report order and a real training then take it."""
from __future__ import annotations

import json

import pytest
import torch

from bearrec import losses
from bearrec.errors import ConfigError
from bearrec.methods import Objective, ObjectiveConfig, registry
from bearrec.methods.spec import LabelTokens, Settings


def toy_batch_loss(t: LabelTokens, o: Settings) -> torch.Tensor:
    """Twice MSL: easy to check against the registered msl."""
    return 2.0 * losses.msl_loss(t.child_logits, t.child_target, t.child_valid, o.tau).sum()


TOY = Objective("toy", "twice the masked softmax loss", "masked", toy_batch_loss, takes_base=True, aliases=("twice",))


@pytest.fixture
def with_toy(monkeypatch):
    monkeypatch.setattr(registry, "OBJECTIVES", registry.OBJECTIVES + (TOY,))


def test_report_order_is_the_baselines_then_each_objectives_variants():
    assert registry.report_order() == ("popularity", "sasrec", "sft", "msl", "msl+ce", "direct", "direct+ce",
                                       "direct-sft", "bear", "bear+ce", "bear-sft", "apao", "apao-pairwise", "igd")


@pytest.mark.parametrize("method", [m for m in registry.report_order() if not registry.is_baseline(m)])
def test_every_reported_name_parses_back_to_itself(method):
    assert ObjectiveConfig.for_method(method).method == method


@pytest.mark.parametrize("bad", ["", "nope", "bear-", "bear-xyz", "+ce", "bear+ce+ce", "sasrec"])
def test_names_outside_the_grammar_are_refused_with_the_known_objectives(bad):
    with pytest.raises(ConfigError, match="not of the form NAME.*sft, msl, direct, bear"):
        registry.parse_method(bad)


def test_an_objective_in_the_registry_is_a_method_everywhere(with_toy):
    assert ObjectiveConfig(name="toy").score_mode == "masked"
    assert ObjectiveConfig.for_method("toy-sft").method == "toy-sft"
    assert ObjectiveConfig.for_method("twice+ce").method == "toy+ce"  # an alias
    assert registry.report_order()[-3:] == ("toy", "toy+ce", "toy-sft")
    with pytest.raises(ConfigError, match="unknown. Fix: use one of sft, msl, direct, bear, apao, apao-pairwise, igd, toy"):
        ObjectiveConfig(name="toys")


def test_the_trainer_calls_the_registered_loss(with_toy):
    from bearrec.train.trainer import objective_loss
    from bearrec.trie import ItemTrie

    # a trie over three 2-token items and EOS, built from token sequences directly
    trie = ItemTrie.from_sequences([[5, 6, 0], [5, 7, 0], [8, 9, 0]], ["a", "b", "c"])
    labels = torch.tensor([[-100, 5, 6, 0], [-100, 8, 9, 0]])
    nodes = torch.tensor([[-1] + trie_path(trie, [5, 6, 0]), [-1] + trie_path(trie, [8, 9, 0])])
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 12)
    toy, n = objective_loss(logits, labels, nodes, trie, ObjectiveConfig(name="toy"))
    msl, m = objective_loss(logits, labels, nodes, trie, ObjectiveConfig(name="msl"))
    assert n == m == 6 and float(toy) == pytest.approx(2 * float(msl)) and float(msl) > 0


def trie_path(trie, sequence):
    """The trie node of each prefix of `sequence` (the node before each token)."""
    return [trie.node_of(sequence[:k]) for k in range(len(sequence))]


def test_a_run_trains_with_a_registered_objective(with_toy, tmp_path):
    from run_fixtures import train_small_run, write_small_dataset

    write_small_dataset(tmp_path / "data")
    run = train_small_run(tmp_path / "data", tmp_path / "run", "objective.name=toy", "objective.single_child_ce=true")
    config = json.loads((run / "config.json").read_text())
    assert (config["objective"], config["method"], config["score_mode"]) == ("toy", "toy+ce", "masked")


def test_an_objective_declares_its_own_hyperparameters(monkeypatch):
    """`Objective.params` (a dataclass) gives an objective keys of its own under objective.params, checked by name
    and type, read in its loss through `settings()`."""
    from dataclasses import dataclass

    @dataclass
    class ToyParams:
        factor: float = 2.0

    toy = Objective("toy", "factor times MSL", "masked", toy_batch_loss, params=ToyParams)
    monkeypatch.setattr(registry, "OBJECTIVES", registry.OBJECTIVES + (toy,))
    assert ObjectiveConfig(name="toy").settings() == ToyParams()
    assert ObjectiveConfig(name="toy", params={"factor": 3.0}).settings().factor == 3.0
    with pytest.raises(ConfigError, match="unknown key objective.params.factr of the toy objective. Valid keys: factor"):
        ObjectiveConfig(name="toy", params={"factr": 3.0})
    with pytest.raises(ConfigError, match="objective.params.factor must be a number"):
        ObjectiveConfig(name="toy", params={"factor": "big"})
    with pytest.raises(ConfigError, match="the bear objective takes no params of its own"):
        ObjectiveConfig(name="bear", params={"factor": 3.0})
