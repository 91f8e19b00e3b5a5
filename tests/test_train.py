"""The trainer: config parsing, the collator's trie walk, objective losses on a real (tiny) model against the
dense reference functions, the run-directory contract, gradient accumulation, faults and resume after SIGKILL."""
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from bearrec import losses
from bearrec.data.dataset import Dataset, Interaction, save_dataset
from bearrec.errors import BearrecError, ConfigError, DataError
from bearrec.prompts import ItemTexts, get_template, item_texts
from bearrec.train import (BearTrainer, ObjectiveConfig, TrainCollator, check_run_config, encode_rows, load_config,
                           objective_loss, train)
from bearrec.train.batches import IGNORE
from bearrec.trie import ItemTrie

WORDS = "red blue green pen paper clip stapler desk lamp chair note book ink tape folder".split()


def make_dataset(path: Path, n_train: int = 16, seed: int = 0) -> Path:
    """A small catalog whose titles share prefixes (so trie steps have several children) and three splits."""
    rng = random.Random(seed)
    items = {str(i): " ".join(rng.sample(WORDS, rng.randint(1, 3))).title() for i in range(30)}
    ids = list(items)

    def rows(n, start):
        return [Interaction(f"u{start + k}", tuple(rng.sample(ids, 3)), rng.choice(ids), start + k) for k in range(n)]

    save_dataset(Dataset(items, {"train": rows(n_train, 0), "valid": rows(4, 100), "test": rows(4, 200)}), path)
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """(dataset dir, tiny model dir, tokenizer, template) shared by the tests of this module."""
    from bearrec import models
    from bearrec.data.dataset import load_dataset

    root = tmp_path_factory.mktemp("train")
    ds_dir = make_dataset(root / "ds")
    template = get_template("compact", max_history=10)
    ds = load_dataset(ds_dir)
    model_dir = models.build_tiny_model(models.tiny_model_texts(ds, item_texts(ds, template)), root / "tiny", vocab_size=300,
                                        hidden_size=32, intermediate_size=64, num_heads=4)
    return ds_dir, model_dir, models.load_tokenizer(model_dir), template, ds


def quick_config(env, out, *extra):
    ds_dir, model_dir, *_ = env
    return load_config(None, [f"dataset={ds_dir}", f"output_dir={out}", f"model={model_dir}", "template=compact",
                              "training.per_device_train_batch_size=4", "training.logging_steps=1",
                              "training.learning_rate=1e-3", "training.disable_tqdm=true", *extra])


# ------------------------------------------------------------------------------------------ config
def test_load_config_yaml_overrides_and_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("dataset: d\nobjective: {name: msl, num_beams: 5}\ntraining: {learning_rate: 1e-4}\n"
                    "lora: {r: 4}\n")
    cfg = load_config(path, ["objective.name=bear", "training.learning_rate=2e-3", "lora.alpha=8", "seed=3"])
    assert cfg.objective == ObjectiveConfig(name="bear", num_beams=5)
    assert cfg.training["learning_rate"] == 2e-3 and cfg.lora.r == 4 and cfg.lora.alpha == 8
    args = cfg.training_arguments()
    assert args["seed"] == 3 and args["remove_unused_columns"] is False and args["metric_for_best_model"] == "eval_ndcg@5"
    assert args["greater_is_better"] is True and args["prediction_loss_only"] is True
    assert load_config(path, ["lora=null"]).lora is None
    assert cfg.objective.score_mode == "masked" and ObjectiveConfig().score_mode == "full"
    with pytest.raises(ConfigError, match=r"unknown key objective\.beam\b.*num_beams"):
        load_config(path, ["objective.beam=3"])
    with pytest.raises(ConfigError, match="unknown key epochs. Valid keys: dataset"):
        load_config(path, ["epochs=3"])
    with pytest.raises(ConfigError, match="num_beams must be an integer >= 1"):
        load_config(path, ["objective.num_beams=0"])
    with pytest.raises(ConfigError, match="selection_metric='eval_ndcg@10' is not available"):
        load_config(path, ["objective.num_beams=5", "selection_metric=eval_ndcg@10"])
    assert load_config(path, ["selection_metric=eval_hr@5"]).training_arguments()["metric_for_best_model"] == "eval_hr@5"
    assert load_config(path, ["objective.name=bear", "objective.base=sft"]).objective.score_mode == "full"
    for method in ("sft", "msl", "bear", "bear-sft", "direct-sft", "msl+ce", "bear+ce", "direct+ce"):
        assert ObjectiveConfig.for_method(method).method == method
    assert ObjectiveConfig.for_method("msl+ce").score_mode == "masked"
    for bad in ("bear+ce-sft", "bear-", "Bear"):
        with pytest.raises(ConfigError, match="is not of the form NAME"):
            ObjectiveConfig.for_method(bad)
    with pytest.raises(ConfigError, match="objective.single_child_ce must be true or false, got 'no'"):
        load_config(path, ["objective.single_child_ce=no"])
    # the full-softmax objectives already give every token the CE: the setting changes nothing there
    assert ObjectiveConfig(name="sft", single_child_ce=True).method == "sft"
    assert ObjectiveConfig.for_method("bear-sft+ce").method == "bear-sft"
    with pytest.raises(ConfigError, match="objective.base applies to bear and direct only"):
        load_config(path, ["objective.name=msl", "objective.base=sft"])
    with pytest.raises(ConfigError, match="objective.base=sft takes neither"):
        load_config(path, ["objective.name=direct", "objective.base=sft", "objective.tau=2"])
    with pytest.raises(ConfigError, match="objective.base='ce' is unknown"):
        load_config(path, ["objective.base=ce"])
    with pytest.raises(ConfigError, match="objective.name='beam' is unknown"):
        load_config(path, ["objective.name=beam"])
    with pytest.raises(ConfigError, match="training.learnin_rate is not a transformers.TrainingArguments field"):
        load_config(path, ["training.learnin_rate=1"])
    with pytest.raises(ConfigError, match="training.output_dir is set by bearrec"):
        load_config(path, ["training.output_dir=x"])
    with pytest.raises(ConfigError, match="dataset is not set"):
        load_config(None, [])


def test_example_configs_load():
    root = Path(__file__).resolve().parents[1] / "configs"
    names = sorted(p.name for p in root.glob("*.yaml") if not p.name.startswith(("accelerate", "deepspeed")))
    assert {"tiny-cpu.yaml", "lora-1b-gpu.yaml", "multi-gpu-deepspeed.yaml"} <= set(names)
    for name in names:
        cfg = load_config(root / name, [])
        assert cfg.objective.name in ("sft", "msl", "bear", "direct")
    gpu = load_config(root / "lora-1b-gpu.yaml", [])
    t = gpu.training
    assert gpu.lora.r == 8 and gpu.lora.alpha == 16 and t["bf16"] is True and t["learning_rate"] == 1e-4
    assert t["per_device_train_batch_size"] * t["gradient_accumulation_steps"] == 128


# ------------------------------------------------------------------------------------------ data and losses
def test_collator_walks_the_trie_along_each_response(env):
    ds_dir, model_dir, tok, template, ds = env
    trie = ItemTrie.from_catalog(ds.items, tok, template)
    rows = encode_rows(ds.train[:6], ItemTexts.titles(ds.items, template), tok)
    batch = TrainCollator(tok.pad_token_id, trie, with_prompts=True)(rows)
    for i, row in enumerate(rows):
        response = [t for t in row["labels"] if t != IGNORE]
        assert response == trie_sequence(ds, tok, template, ds.train[i].target)
        label_cols = (batch["labels"][i] != IGNORE).nonzero().flatten().tolist()
        for k, col in enumerate(label_cols):
            assert int(batch["trie_nodes"][i, col]) == trie.node_of(response[:k])
        assert (batch["trie_nodes"][i][batch["labels"][i] == IGNORE] == -1).all()
        prompt = row["input_ids"][:len(row["input_ids"]) - len(response)]
        assert batch["prompt_ids"][i][batch["prompt_mask"][i].bool()].tolist() == prompt


@pytest.mark.parametrize("method", ["sft", "msl", "bear", "bear-sft", "msl+ce"])
def test_loss_of_a_left_padded_batch_with_kept_logits_equals_each_row_alone(env, tmp_path, method, monkeypatch):
    """The collator left-pads with position ids, and compute_loss computes the logits of the last `longest
    response + 1` positions only (logits_to_keep): the batch's summed loss equals the sum over its rows each
    computed alone with every position's logits."""
    from transformers import AutoModelForCausalLM, TrainingArguments

    import bearrec.train.trainer as trainer_module

    ds_dir, model_dir, tok, template, ds = env
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    trie = ItemTrie.from_catalog(ds.items, tok, template)
    rows = encode_rows(ds.train[:6], ItemTexts.titles(ds.items, template), tok)
    assert len({len(r["input_ids"]) for r in rows}) > 1  # the batch really is padded
    collate = TrainCollator(tok.pad_token_id, trie)
    trainer = BearTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), report_to="none",
                                                              remove_unused_columns=False),
                          objective=ObjectiveConfig.for_method(method, num_beams=3), trie=trie)
    kept = []
    monkeypatch.setattr(trainer_module, "logits_to_keep", lambda m, n: kept.append(n) or {"logits_to_keep": n})
    with torch.no_grad():
        batch = trainer.compute_loss(model, collate(rows))
        assert kept and kept[0] < collate(rows)["input_ids"].shape[1] / 2  # far fewer positions than the batch has
        monkeypatch.setattr(trainer_module, "logits_to_keep", lambda m, n: {})  # every position's logits
        alone = [trainer.compute_loss(model, collate([r])) for r in rows]
    n_labels = [sum(t != IGNORE for t in r["labels"][1:]) for r in rows]
    assert float(batch) == pytest.approx(sum(float(a) * n for a, n in zip(alone, n_labels)) / sum(n_labels), rel=1e-5)


def trie_sequence(ds, tok, template, item):
    from bearrec.prompts import encode_response

    return encode_response(tok, template, ds.items[item])


@pytest.mark.parametrize("objective", ["sft", "msl", "bear", "bear-weighted", "bear-sft", "msl+ce", "bear+ce",
                                       "bear-sft+ce"])
def test_objective_loss_on_a_model_matches_dense_reference(env, objective):
    from transformers import AutoModelForCausalLM

    ds_dir, model_dir, tok, template, ds = env
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    trie = ItemTrie.from_catalog(ds.items, tok, template)
    batch = TrainCollator(tok.pad_token_id, trie)(encode_rows(ds.train[:5], ItemTexts.titles(ds.items, template), tok))
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    weighted = objective == "bear-weighted"
    cfg = ObjectiveConfig.for_method("bear" if weighted else objective, num_beams=3, weighted=weighted)
    name = cfg.name
    total, count = objective_loss(logits, batch["labels"], batch["trie_nodes"], trie, cfg)
    # reference: dense (tokens x vocabulary) masks from the token prefixes, as the reference implementation does
    h = logits[:, :-1][batch["labels"][:, 1:] != IGNORE]
    y = batch["labels"][:, 1:][batch["labels"][:, 1:] != IGNORE]
    nodes = []
    for row in batch["labels"]:
        response = row[row != IGNORE].tolist()
        nodes += [trie.node_of(response[:k]) for k in range(len(response))]
    allowed = trie.allowed_mask(torch.tensor(nodes), h.shape[-1])
    single_ce = torch.where(allowed.sum(1) == 1, losses.sft_loss(h, y), torch.zeros(len(y)))
    ref = {"sft": lambda: losses.sft_loss(h, y).mean(),
           "msl": lambda: losses.msl_loss(h, y, allowed).mean(),
           "bear": lambda: losses.bear_loss(h, y, allowed, num_beams=3).mean(),
           "bear-weighted": lambda: losses.bear_weighted_loss(h, y, allowed, num_beams=3).sum(),
           # the paper's L_SFT + lam L_reg: full-vocabulary CE, margin over the valid children
           "bear-sft": lambda: (losses.sft_loss(h, y) + 0.25 * F.logsigmoid(
               losses.pruning_margin(h, y, allowed, num_beams=3)[1] / 2.75)).mean(),
           # single_child_ce: the full CE where the prefix has one child, the masked objective elsewhere
           "msl+ce": lambda: (losses.msl_loss(h, y, allowed) + single_ce).mean(),
           "bear+ce": lambda: (losses.bear_loss(h, y, allowed, num_beams=3) + single_ce).mean()}
    ref["bear-sft+ce"] = ref["bear-sft"]  # the SFT base already trains single-child tokens: nothing is added
    ref = ref[objective]()
    assert count == y.numel() and torch.allclose(total / count, ref, atol=1e-5)
    if name == "msl":  # single-child steps exist and contribute exactly zero
        single = allowed.sum(1) == 1
        assert single.any() and torch.allclose(losses.msl_loss(h, y, allowed)[single], torch.zeros(int(single.sum())))
    if name == "sft":  # our reduction equals HF's own causal-LM loss
        hf = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "labels")}).loss
        assert torch.allclose(total / count, hf, atol=1e-5)


@torch.no_grad()
def reference_thresholds(model, prompt_ids, prompt_mask, trie, num_beams, *, score_mode, max_steps):
    """A slow, obvious constrained beam search (full recomputation) for the direct objective."""
    out = torch.full((len(prompt_ids), max_steps), float("-inf"))
    for r in range(len(prompt_ids)):
        prompt = prompt_ids[r][prompt_mask[r].bool()].tolist()
        beams = [([], 0.0)]
        for t in range(max_steps):
            cands = []
            for seq, lp in beams:
                allowed = trie.allowed(seq)
                if not allowed:
                    continue
                logits = model(input_ids=torch.tensor([prompt + seq])).logits[0, -1]
                logp = (torch.log_softmax(logits[allowed], -1) if score_mode == "masked"
                        else torch.log_softmax(logits, -1)[allowed])
                cands += [(seq + [tok], lp + float(v)) for tok, v in zip(allowed, logp)]
            beams = sorted(cands, key=lambda c: -c[1])[:num_beams]
            if len(beams) == num_beams:
                out[r, t] = beams[-1][1]
    return out


@pytest.mark.parametrize("base", ["msl", "sft"])
def test_direct_objective_adds_the_relaxed_beam_term(env, tmp_path, base):
    from transformers import AutoModelForCausalLM, TrainingArguments

    ds_dir, model_dir, tok, template, ds = env
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    trie = ItemTrie.from_catalog(ds.items, tok, template)
    batch = TrainCollator(tok.pad_token_id, trie, with_prompts=True)(encode_rows(ds.train[:3], ItemTexts.titles(ds.items, template), tok))
    cfg = ObjectiveConfig(name="direct", num_beams=2, lam=0.5, base=base)
    score = cfg.score_mode
    trainer = BearTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), report_to="none",
                                                              remove_unused_columns=False),
                          objective=cfg, trie=trie, thresholds_fn=reference_thresholds)
    loss = trainer.compute_loss(model, dict(batch))
    steps = int((batch["labels"] != IGNORE).sum(1).max())
    thr = reference_thresholds(model, batch["prompt_ids"], batch["prompt_mask"], trie, 2, score_mode=score,
                               max_steps=steps)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=batch["position_ids"]).logits
    base_loss, count = objective_loss(logits, batch["labels"], batch["trie_nodes"], trie, ObjectiveConfig(name=base))
    # the explicit (3.1) relaxation, row by row
    extra = 0.0
    for r in range(3):
        response = batch["labels"][r][batch["labels"][r] != IGNORE].tolist()
        cum = 0.0
        for t, tok_id in enumerate(response):
            step_logits = logits[r, (batch["labels"][r] != IGNORE).nonzero()[t].item() - 1]
            allowed = trie.allowed(response[:t])
            step_logp = (torch.log_softmax(step_logits[allowed], -1)[allowed.index(tok_id)] if score == "masked"
                         else torch.log_softmax(step_logits, -1)[tok_id])
            cum += float(step_logp.detach())
            if torch.isfinite(thr[r, t]) and t < len(response) - 1:  # the EOS step has no direct term
                extra += -float(torch.nn.functional.logsigmoid(torch.tensor((cum - float(thr[r, t])) / 2.75)))
    assert torch.isfinite(thr).any() and extra > 0
    assert torch.allclose(loss, (base_loss + 0.5 * extra) / count, atol=1e-4)
    loss.backward()
    assert model.model.embed_tokens.weight.grad is not None
    # by default the thresholds come from the shared constrained beam search (bearrec.decoding)
    trainer.thresholds_fn = None
    shared = trainer.compute_loss(model, dict(batch))
    assert torch.isfinite(shared) and shared.item() >= base_loss.item() / count - 1e-6


# ------------------------------------------------------------------------------------------ runs
def test_train_writes_the_run_directory_contract(env, tmp_path):
    from bearrec.models import load_trained

    cfg = quick_config(env, tmp_path / "run", "objective.name=bear", "training.num_train_epochs=2",
                       "selection_metric=eval_ndcg@10")
    run = train(cfg)
    for name in ("config.json", "trie.pt", "log_history.json", "train_summary.json", "model/config.json"):
        assert (run / name).is_file(), name
    conf = json.loads((run / "config.json").read_text())
    assert conf["objective"] == "bear" and conf["score_mode"] == "masked" and conf["seed"] == 42
    assert {"dataset", "template", "domain", "max_history", "model", "objective_config"} <= set(conf)
    history = json.loads((run / "log_history.json").read_text())
    evals = [e for e in history if "eval_loss" in e]
    assert [e["epoch"] for e in evals] == [1.0, 2.0]
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["global_step"] == 8 and len(summary["epoch_seconds"]) == 2
    # checkpoints are selected on validation NDCG@10 of the constrained beam search (logged each epoch)
    ranked = [e for e in history if "eval_ndcg@10" in e]
    assert [e["epoch"] for e in ranked] == [1.0, 2.0] and all(0 <= e["eval_ndcg@10"] <= 1 for e in ranked)
    assert summary["selection_metric"] == "eval_ndcg@10"
    assert summary["best_metric"] == max(e["eval_ndcg@10"] for e in ranked)
    assert Path(summary["best_checkpoint"]).parent == run / "checkpoints"
    model, tok = load_trained(run / "model")
    ItemTrie.load(run / "trie.pt").check_tokenizer(tok)
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        train(cfg)
    # resuming (or reusing) the run with another config would mix two runs in one directory
    check_run_config(run, cfg)
    other = quick_config(env, tmp_path / "run", "objective.name=bear", "objective.lam=1.0",
                         "training.num_train_epochs=2", "selection_metric=eval_ndcg@10")
    with pytest.raises(ConfigError, match=r"config.json was written by a run with a different config: "
                                          r"objective_config\.lam: 0\.25 → 1\.0\. Fix: .*another --output"):
        train(other, resume=True)


def test_a_run_written_before_newer_objective_fields_can_still_be_resumed(env, tmp_path):
    """config.json from before `method`, `objective.base`, `objective.single_child_ce`, `items` and `history` reads
    as their defaults."""
    from bearrec.files import write_json
    from bearrec.train.trainer import run_record

    cfg = quick_config(env, tmp_path / "run", "objective.name=bear")
    old = run_record(cfg, "tiny")
    del old["method"], old["objective_config"]["base"], old["objective_config"]["single_child_ce"]
    del old["item_kind"], old["history"]
    write_json(tmp_path / "run" / "config.json", old)
    check_run_config(tmp_path / "run", cfg)
    for changed in ("objective.base=sft", "objective.single_child_ce=true", "item_kind=semantic_id", "history=both"):
        with pytest.raises(ConfigError, match="different config"):
            check_run_config(tmp_path / "run", quick_config(env, tmp_path / "run", "objective.name=bear", changed))


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def test_gradient_accumulation_equals_the_full_batch(env, tmp_path):
    """One SGD step on 4 rows equals 2 accumulated micro-batches of 2 rows (token-level normalisation)."""
    common = ["objective.name=bear", "max_train_rows=4", "training.max_steps=1", "training.optim=sgd",
              "training.learning_rate=1.0", "training.eval_strategy=no", "training.save_strategy=no",
              "training.load_best_model_at_end=false"]
    full = train(quick_config(env, tmp_path / "full", *common))
    acc = train(quick_config(env, tmp_path / "acc", *common, "training.per_device_train_batch_size=2",
                             "training.gradient_accumulation_steps=2"))
    a, b = _weights(full / "model"), _weights(acc / "model")
    base = _weights(env[1])
    assert any(not torch.equal(a[k], base[k]) for k in a)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k


def test_bad_inputs_raise_clear_errors(env, tmp_path):
    ds_dir, model_dir, tok, template, ds = env
    with pytest.raises(ConfigError, match="no {history} slot"):
        train(quick_config(env, tmp_path / "t", "template={text: 'Recommend:\n', response_header: '\n'}"))
    with pytest.raises(DataError, match="empty"):
        encode_rows(ds.train[:1], ItemTexts.titles({**ds.items, ds.train[0].target: "   "}, template), tok)
    with pytest.raises(DataError, match="not in the catalog"):
        encode_rows([Interaction("u", ds.train[0].history, "missing", 0)], ItemTexts.titles(ds.items, template), tok)
    with pytest.raises(ConfigError, match="num_beams"):
        ObjectiveConfig(name="bear", num_beams=0)


def test_nan_loss_names_the_step_and_the_fix(env, tmp_path):
    from transformers import AutoModelForCausalLM, TrainingArguments

    ds_dir, model_dir, tok, template, ds = env
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    trie = ItemTrie.from_catalog(ds.items, tok, template)
    with torch.no_grad():
        model.model.norm.weight.fill_(float("nan"))
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", remove_unused_columns=False, max_steps=2,
                             per_device_train_batch_size=4, disable_tqdm=True)
    trainer = BearTrainer(model=model, args=args, train_dataset=encode_rows(ds.train, ItemTexts.titles(ds.items, template), tok),
                          data_collator=TrainCollator(tok.pad_token_id, trie), objective=ObjectiveConfig("msl"),
                          trie=trie)
    with pytest.raises(BearrecError, match=r"msl loss is nan at step 1\. Fix: lower training.learning_rate"):
        trainer.train()


KILLABLE = textwrap.dedent("""
    import sys, time
    from transformers import TrainerCallback
    from bearrec.train import load_config, train

    class Slow(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            time.sleep(0.4)

    train(load_config(None, sys.argv[1:]), callbacks=[Slow()])
""")


def test_resume_after_sigkill_loses_no_completed_step(env, tmp_path):
    """Kill a run (SIGKILL) after its first checkpoint; resume=True ends with the uninterrupted run's model."""
    common = ["objective.name=msl", "training.max_steps=6", "training.save_strategy=steps", "training.save_steps=2",
              "training.eval_strategy=steps", "training.eval_steps=2"]
    killed = quick_config(env, tmp_path / "killed", *common)
    script = tmp_path / "run.py"
    script.write_text(KILLABLE)
    overrides = [f"dataset={killed.dataset}", f"output_dir={killed.output_dir}", f"model={killed.model}",
                 "template=compact", *[f"training.{k}={v}" for k, v in killed.training.items()],
                 *common]
    proc = subprocess.Popen([sys.executable, str(script), *overrides], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    first = Path(killed.output_dir) / "checkpoints" / "checkpoint-2" / "trainer_state.json"
    deadline = time.time() + 60
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert first.exists(), proc.stderr.read().decode()[-2000:]
    assert not (Path(killed.output_dir) / "model").exists()  # it really died before finishing
    run = train(killed, resume=True)
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["global_step"] == 6 and summary["resumed_from"].endswith(("checkpoint-2", "checkpoint-4"))
    steps = [e["step"] for e in json.loads((run / "log_history.json").read_text()) if "loss" in e]
    assert steps == [1, 2, 3, 4, 5, 6]
    straight = train(quick_config(env, tmp_path / "straight", *common))
    a, b = _weights(run / "checkpoints" / "checkpoint-6"), _weights(straight / "checkpoints" / "checkpoint-6")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
