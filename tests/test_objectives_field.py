"""The objectives of the field: APAO (pointwise and pairwise) and IGD, each against a slow reference written here from
its formulas (loops over rows and prefixes on random logits and a small random trie), values and gradients; the
pairwise negatives' scores against a plain forward of prompt + item; their names; and a tiny training run each."""
from __future__ import annotations

import json
import math
import random

import pytest
import torch

from bearrec.errors import ConfigError
from bearrec.methods import ObjectiveConfig, registry
from bearrec.methods.spec import Negatives
from bearrec.train.batches import IGNORE, TrainCollator
from bearrec.train.negatives import prefix_counts, proper_prefix_nodes, sample_items, score_negatives
from bearrec.train.trainer import objective_loss
from bearrec.trie import ItemTrie
from decoding_fixtures import random_sequences, random_trie, tiny_llama

VOCAB = 16


@pytest.fixture(scope="module")
def trie():
    return random_trie(40, VOCAB, seed=3, max_len=5)


def catalog(trie) -> list[list[int]]:
    return trie.sequences(torch.arange(trie.num_nodes)[trie.item_counts(torch.arange(trie.num_nodes)) > 0])


def prefix_node(trie, sequence: list[int], t: int) -> int:
    """The node of `sequence`'s first t tokens if that is a proper prefix of it, else -1."""
    return trie.node_of(sequence[:t]) if t <= len(sequence) - 1 else -1


def make_batch(trie, rows: int = 6, seed: int = 0):
    """Random logits (R, L, V) with grad, unshifted labels and trie nodes: each row a catalog item after a prompt."""
    rng = random.Random(seed)
    seqs = [rng.choice(catalog(trie)) for _ in range(rows)]
    prompts = [rng.randint(1, 4) for _ in range(rows)]
    width = max(p + len(s) for p, s in zip(prompts, seqs))
    labels = torch.full((rows, width), IGNORE)
    nodes = torch.full((rows, width), -1)
    for r, s in enumerate(seqs):
        labels[r, width - len(s):] = torch.tensor(s)
        nodes[r, width - len(s):] = torch.tensor([trie.node_of(s[:k]) for k in range(len(s))])
    torch.manual_seed(seed)
    logits = (2 * torch.randn(rows, width, VOCAB)).requires_grad_()
    return logits, labels, nodes, seqs


def token_lp(logits, labels, r: int) -> list[torch.Tensor]:
    """The reference's full-softmax log p of row r's label tokens, in float64, from an explicit loop."""
    out = []
    for col in range(1, labels.shape[1]):
        if labels[r, col] != IGNORE:
            out.append(torch.log_softmax(logits[r, col - 1].double(), dim=0)[labels[r, col]])
    return out


def adaptive(losses: list[torch.Tensor], eta: float) -> list[float]:
    base = [float(x) for x in losses]
    total = sum(base)
    w = [1 / len(base)] * len(base) if abs(total) < 1e-12 else [b / (total + 1e-12) for b in base]
    w = [wi * math.exp(eta * b) for wi, b in zip(w, base)]
    return [wi / (sum(w) + 1e-12) for wi in w]


def apao_reference(row_terms: list[dict[int, torch.Tensor]], ce: torch.Tensor, n: int, beta: float, eta: float):
    """CE + beta * N * sum_t w_t L_t, L_t the mean of the rows' terms at prefix length t."""
    lengths = sorted({t for terms in row_terms for t in terms})
    if not lengths:
        return ce
    means = [sum(terms[t] for terms in row_terms if t in terms) / sum(t in terms for terms in row_terms)
             for t in lengths]
    return ce + beta * n * sum(w * m for w, m in zip(adaptive(means, eta), means))


def check_equal(total, reference, inputs):
    assert float(total.detach()) == pytest.approx(float(reference.detach()), rel=1e-5, abs=1e-5)
    got = torch.autograd.grad(total, inputs, retain_graph=True)
    want = torch.autograd.grad(reference, inputs)
    for g, w in zip(got, want):
        torch.testing.assert_close(g.double(), w.double(), rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------------ IGD
@pytest.mark.parametrize("beta", [0.1, 0.5, 1.0])
def test_igd_weights_zero_gain_tokens_by_beta_and_normalises_by_the_weights(trie, beta):
    logits, labels, nodes, seqs = make_batch(trie, seed=1)
    total, count = objective_loss(logits, labels, nodes, trie, ObjectiveConfig(name="igd", params={"beta": beta}))
    weighted, weights = 0.0, 0.0
    for r, s in enumerate(seqs):
        for k, lp in enumerate(token_lp(logits, labels, r)):
            # information gain: log(items under the prefix / items under the prefix and the token), uniform catalog
            under = [q for q in catalog(trie) for _ in trie.items_of(q) if q[:k] == s[:k]]
            gain = math.log(len(under) / sum(q[:k + 1] == s[:k + 1] for q in under))
            w = beta if gain == 0 else 1.0
            weighted, weights = weighted + w * -lp, weights + w
    assert count == sum(len(s) for s in seqs)
    check_equal(total, count * weighted / weights, [logits])
    if beta == 1.0:  # plain SFT
        sft, _ = objective_loss(logits, labels, nodes, trie, ObjectiveConfig(name="sft"))
        assert float(total) == pytest.approx(float(sft), rel=1e-6)


def test_igd_zero_gain_is_a_single_child(trie):
    """Tokens with one trie child carry zero gain and others a positive one: the batch has both kinds."""
    _, labels, nodes, _ = make_batch(trie, seed=1)
    kids = trie.num_children(nodes[labels != IGNORE])
    assert bool((kids == 1).any()) and bool((kids > 1).any())


# ------------------------------------------------------------------------------------------ APAO pointwise
@pytest.mark.parametrize("beta,prefix_tau,eta", [(0.1, 1.0, 0.0), (0.7, 2.0, 0.5), (0.3, 0.5, -1.0)])
def test_apao_pointwise_matches_its_formula(trie, beta, prefix_tau, eta):
    logits, labels, nodes, seqs = make_batch(trie, seed=2)
    config = ObjectiveConfig(name="apao", params={"beta": beta, "prefix_tau": prefix_tau, "eta": eta})
    total, count = objective_loss(logits, labels, nodes, trie, config)
    ce, rows = 0.0, []
    for r in range(len(seqs)):
        lp = token_lp(logits, labels, r)
        ce = ce - sum(lp)
        rows.append({t: -sum(lp[:t]) / t / prefix_tau for t in range(1, len(lp))})  # proper prefixes only
    check_equal(total, apao_reference(rows, ce, count, beta, eta), [logits])


def test_apao_pointwise_without_beta_is_sft(trie):
    logits, labels, nodes, _ = make_batch(trie, seed=4)
    apao, _ = objective_loss(logits, labels, nodes, trie, ObjectiveConfig(name="apao", params={"beta": 0.0}))
    sft, _ = objective_loss(logits, labels, nodes, trie, ObjectiveConfig(name="sft"))
    assert float(apao) == pytest.approx(float(sft), rel=1e-6)


# ------------------------------------------------------------------------------------------ APAO pairwise
def reference_negatives(trie, seqs, k: int, seed: int):
    """Sampled negatives with duplicates forced in (the target itself, a repeated item), their random token
    log-probs with grad, and Negatives built from them with node_of (not the trainer's helpers)."""
    rng = random.Random(seed)
    items = catalog(trie)
    negs = [[rng.choice(items) for _ in range(k)] for _ in seqs]
    negs[0][0] = seqs[0]      # the target itself: masked at every t
    negs[1][2] = negs[1][1]   # a repeated negative: the second one masked
    s = max(len(q) for q in seqs) - 1
    torch.manual_seed(seed)
    lp = (-torch.rand(len(seqs), k, s) * 3).requires_grad_()
    nodes = torch.tensor([[[prefix_node(trie, q, t) for t in range(1, s + 1)] for q in row] for row in negs])
    positive = torch.tensor([[prefix_node(trie, q, t) for t in range(1, s + 1)] for q in seqs])
    counts = torch.tensor([len({tuple(q[:t]) for q in items if len(q) > t}) for t in range(1, s + 1)],
                          dtype=torch.float32)
    return negs, lp, Negatives(lp, nodes, positive, counts)


@pytest.mark.parametrize("beta,prefix_tau,eta", [(0.1, 1.0, 0.0), (0.6, 0.5, 0.8)])
def test_apao_pairwise_matches_its_formula(trie, beta, prefix_tau, eta):
    logits, labels, nodes, seqs = make_batch(trie, seed=5)
    negs, neg_lp, negatives = reference_negatives(trie, seqs, k=7, seed=5)
    config = ObjectiveConfig(name="apao-pairwise", params={"beta": beta, "prefix_tau": prefix_tau, "eta": eta,
                                                           "num_negatives": 7})
    total, count = objective_loss(logits, labels, nodes, trie, config, negatives=negatives)
    items = catalog(trie)
    ce, rows, masked = 0.0, [], 0
    for r, target in enumerate(seqs):
        lp = token_lp(logits, labels, r)
        ce = ce - sum(lp)
        terms = {}
        for t in range(1, len(target)):
            positive = sum(lp[:t]) / prefix_tau
            seen, scores = {tuple(target[:t])}, []
            for j, q in enumerate(negs[r]):
                if len(q) - 1 < t:
                    continue
                if tuple(q[:t]) in seen:
                    masked += 1
                    continue
                seen.add(tuple(q[:t]))
                scores.append(neg_lp[r, j, :t].double().sum() / prefix_tau)
            others = len({tuple(q[:t]) for q in items if len(q) > t}) - 1
            scale = others / (1 + len(scores))
            denominator = torch.exp(positive) + scale * sum(torch.exp(x) for x in scores)
            terms[t] = -(positive - torch.log(denominator)) / t
        rows.append(terms)
    assert masked >= 2
    check_equal(total, apao_reference(rows, ce, count, beta, eta), [logits, neg_lp])


def test_apao_pairwise_without_negatives_is_refused(trie):
    logits, labels, nodes, _ = make_batch(trie)
    with pytest.raises(ConfigError, match="needs sampled negatives"):
        objective_loss(logits, labels, nodes, trie, ObjectiveConfig(name="apao-pairwise"))


def test_the_negatives_are_scored_as_a_plain_forward_of_prompt_and_item():
    """score_negatives reads the batch's KV cache (the target's positions masked out): each negative's token
    log-probs, and their gradients, equal a forward of the unpadded prompt + item alone; its trie nodes, the target's
    and the prefix counts equal node_of and a count over the catalog."""
    vocab, k = 24, 5
    seqs = random_sequences(30, vocab, seed=7, max_len=4)
    trie = ItemTrie.from_sequences(seqs)
    model = tiny_llama(vocab_size=vocab, seed=1)
    rng = random.Random(7)
    rows = [([rng.randint(3, vocab - 1) for _ in range(rng.randint(2, 6))], rng.choice(seqs)) for _ in range(4)]
    batch = TrainCollator(pad_token_id=0, trie=trie)(
        [{"input_ids": p + s, "labels": [IGNORE] * len(p) + s} for p, s in rows])
    keep = int((batch["labels"] != IGNORE).sum(1).max()) + 1
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                position_ids=batch["position_ids"], use_cache=True, logits_to_keep=keep)
    got = score_negatives(model, out, batch["attention_mask"], batch["labels"], batch["trie_nodes"], trie, k,
                          torch.Generator().manual_seed(11))
    leaves = sample_items(trie, len(rows), k, torch.Generator().manual_seed(11))
    s = max(len(q) for _, q in rows) - 1
    negs = trie.sequences(leaves.reshape(-1))
    assert got.nodes.tolist() == [[[prefix_node(trie, negs[r * k + j], t) for t in range(1, s + 1)]
                                   for j in range(k)] for r in range(len(rows))]
    assert got.positive_nodes.tolist() == [[prefix_node(trie, q, t) for t in range(1, s + 1)] for _, q in rows]
    assert got.prefix_counts.tolist() == [len({tuple(q[:t]) for q in seqs if len(q) > t}) for t in range(1, s + 1)]
    valid = got.nodes >= 0
    assert bool(valid.any()) and not bool(valid.all())  # some negatives shorter than the longest target
    mine = torch.autograd.grad(got.log_probs[valid].sum(), model.model.embed_tokens.weight)[0]
    plain = []
    for r, (prompt, _) in enumerate(rows):
        for j in range(k):
            q = negs[r * k + j]
            lp = torch.log_softmax(model(input_ids=torch.tensor([prompt + q])).logits[0].float(), dim=-1)
            for t in range(1, min(s, len(q) - 1) + 1):
                plain.append(lp[len(prompt) + t - 2, q[t - 1]])
                assert float(got.log_probs[r, j, t - 1]) == pytest.approx(float(plain[-1]), abs=1e-5)
    assert len(plain) == int(valid.sum())
    want = torch.autograd.grad(torch.stack(plain).sum(), model.model.embed_tokens.weight)[0]
    torch.testing.assert_close(mine, want, rtol=1e-4, atol=1e-5)


def test_proper_prefixes_and_counts_on_the_fixture_trie(trie):
    leaves = torch.tensor([trie.node_of(q) for q in catalog(trie)])
    width = trie.max_depth
    assert proper_prefix_nodes(trie, leaves, width).tolist() == [
        [prefix_node(trie, q, t) for t in range(1, width + 1)] for q in catalog(trie)]
    assert prefix_counts(trie, width).tolist() == [
        len({tuple(q[:t]) for q in catalog(trie) if len(q) > t}) for t in range(1, width + 1)]


# ------------------------------------------------------------------------------------------ names and params
def test_the_methods_parse_and_name_themselves():
    assert registry.parse_method("apao-pairwise") == ("apao-pairwise", None, False)
    assert ObjectiveConfig.for_method("apao-pairwise").method == "apao-pairwise"
    assert ObjectiveConfig.for_method("apao").score_mode == ObjectiveConfig.for_method("igd").score_mode == "full"
    assert registry.report_order()[-3:] == ("apao", "apao-pairwise", "igd")
    # +ce (the single-child CE of masked objectives) parses but names nothing more on these full-softmax ones
    plus = ObjectiveConfig.for_method("igd+ce")
    assert (plus.name, plus.single_child_ce, plus.method) == ("igd", True, "igd")
    for method in ("apao-sft", "apao-pairwise-sft", "igd-sft"):  # their own base is the authors' CE
        with pytest.raises(ConfigError, match="objective.base applies to"):
            ObjectiveConfig.for_method(method)


def test_igd_plus_ce_trains_as_igd(trie):
    """single_child_ce adds nothing to an objective decoded with full scores (it would undo IGD's weights)."""
    logits, labels, nodes, _ = make_batch(trie, seed=6)
    igd, _ = objective_loss(logits, labels, nodes, trie, ObjectiveConfig.for_method("igd"))
    plus, _ = objective_loss(logits, labels, nodes, trie, ObjectiveConfig.for_method("igd+ce"))
    assert float(plus) == float(igd)


@pytest.mark.parametrize("name,params,message", [
    ("apao", {"beta": -1.0}, "objective.params.beta must be >= 0"),
    ("apao", {"prefix_tau": 0.0}, "objective.params.prefix_tau must be > 0"),
    ("apao-pairwise", {"num_negatives": 0}, "objective.params.num_negatives must be an integer >= 1"),
    ("apao", {"num_negatives": 5}, "unknown key objective.params.num_negatives of the apao objective"),
    ("igd", {"beta": "low"}, "objective.params.beta must be a number"),
    ("igd", {"eta": 1.0}, "unknown key objective.params.eta of the igd objective. Valid keys: beta"),
])
def test_bad_params_are_named(name, params, message):
    with pytest.raises(ConfigError, match=message):
        ObjectiveConfig(name=name, params=params)


# ------------------------------------------------------------------------------------------ training
@pytest.mark.parametrize("name,params", [("apao", ["objective.params.eta=0.5"]),
                                         ("apao-pairwise", ["objective.params.num_negatives=8"]),
                                         ("igd", ["objective.params.beta=0.2"])])
def test_a_tiny_run_trains_with_each(tmp_path, name, params):
    from run_fixtures import train_small_run, write_small_dataset

    write_small_dataset(tmp_path / "data")
    run = train_small_run(tmp_path / "data", tmp_path / "run", f"objective.name={name}", *params)
    config = json.loads((run / "config.json").read_text())
    summary = json.loads((run / "train_summary.json").read_text())
    assert config["method"] == name and config["score_mode"] == "full"
    assert math.isfinite(summary["train_loss"]) and summary["train_loss"] > 0


def test_the_negatives_of_a_batch_are_fixed_by_seed_step_and_tokens():
    from bearrec.train.negatives import batch_generator

    def draw(*key) -> list[int]:
        return torch.randint(1000, (8,), generator=batch_generator(*key)).tolist()

    ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
    assert draw(42, 0, 3, ids) == draw(42, 0, 3, ids)
    assert len({tuple(draw(*key)) for key in [(42, 0, 3, ids), (43, 0, 3, ids), (42, 1, 3, ids), (42, 0, 4, ids),
                                              (42, 0, 3, ids.flip(1))]}) == 5


def test_apao_pairwise_with_gradient_checkpointing_is_refused_with_its_fix(tmp_path):
    from run_fixtures import train_small_run, write_small_dataset

    write_small_dataset(tmp_path / "data")
    with pytest.raises(ConfigError, match="gradient checkpointing turns it off.*Fix: set "
                                          "training.gradient_checkpointing=false"):
        train_small_run(tmp_path / "data", tmp_path / "run", "objective.name=apao-pairwise",
                        "training.gradient_checkpointing=true")
