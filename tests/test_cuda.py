"""Checks that need a CUDA GPU (bench/gpu_check.sh runs them on one; elsewhere every test skips with the reason).

- A bf16 training step of each objective (sft, msl, bear, bear-sft, direct) agrees with the float32 step from the
  same weights on the same batch, within the tolerances stated in BF16_TOLERANCE; `bearrec.train.train` runs
  end to end on CUDA with `training.bf16=true`.
- Decoding on CUDA returns the items of decoding on the CPU, in the same order (beam search with both cache layouts,
  the beam thresholds, exact top-K, the Recommender of a trained run), and beam search keeps its parity with HF
  `generate` on CUDA (the oracle of tests/test_beam_search.py).
- LoRA: a model trained on CUDA saves merged (and adapter-only) and loads back with the same logits.

Tree attention here means the 4-D-mask cache layout that decoding uses with sdpa and eager attention (tested against
the per-beam cache copies that flash attention gets). A fused tree-attention kernel for GPUs is not built yet, so
nothing here tests one.
"""
from __future__ import annotations

import importlib
import math
import random
from pathlib import Path

import pytest
import torch

from bearrec.decoding import beam_search, beam_thresholds, exact_top_k
from decoding_fixtures import item_trie, random_prompts, random_sequences, tiny_llama

CUDA = torch.cuda.is_available()
DEVICE = "cuda"
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (torch.cuda.is_available() is False here); "
                                                   "bench/gpu_check.sh runs these tests on one")]

# bf16 autocast against float32, one step from the same weights and batch (a random model of hidden size 64):
#   loss:      |bf16 - fp32| <= loss_abs + loss_rel * |fp32|
#   gradient:  cosine(bf16, fp32) >= grad_cos and | ||bf16|| / ||fp32|| - 1 | <= grad_norm_rel (all parameters)
#   one AdamW step (lr 1e-4) on each: both lower the float32 loss, and the losses after it agree as the loss does
BF16_TOLERANCE = {"loss_abs": 0.02, "loss_rel": 0.02, "grad_cos": 0.99, "grad_norm_rel": 0.05}
METHODS = ["sft", "msl", "bear", "bear-sft", "direct"]
WORDS = ("red blue green black pen pencil marker paper desk lamp chair note book ink tape folder binder clip label "
         "envelope").split()
V = 64


# ------------------------------------------------------------------------------------------ shared fixtures
def write_dataset(folder: Path, n_items: int = 60, seed: int = 0) -> Path:
    """A prepared dataset whose titles share first words (trie steps with several children) and three splits."""
    from bearrec.data.dataset import Dataset, Interaction, save_dataset

    rng = random.Random(seed)
    items = {str(i): " ".join(rng.sample(WORDS[:6], 1) + rng.sample(WORDS[6:], rng.randint(1, 3))).title()
             for i in range(n_items)}
    ids = list(items)

    def rows(n: int, start: int) -> list:
        return [Interaction(f"u{start + k}", tuple(rng.sample(ids, rng.randint(2, 5))), rng.choice(ids), start + k)
                for k in range(n)]

    save_dataset(Dataset(items, {"train": rows(48, 0), "valid": rows(6, 1000), "test": rows(6, 2000)}), folder)
    return folder


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """(dataset dir, tiny model dir, dataset, tokenizer, template, trie) shared by this module."""
    from bearrec import models
    from bearrec.data.dataset import load_dataset
    from bearrec.prompts import get_template, item_texts
    from bearrec.trie import ItemTrie

    root = tmp_path_factory.mktemp("cuda")
    ds_dir = write_dataset(root / "data")
    ds = load_dataset(ds_dir)
    template = get_template("compact", max_history=10)
    model_dir = models.build_tiny_model(models.tiny_model_texts(ds, item_texts(ds, template)), root / "tiny", vocab_size=400,
                                        hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4)
    tok = models.load_tokenizer(model_dir)
    return ds_dir, model_dir, ds, tok, template, ItemTrie.from_catalog(ds.items, tok, template)


def training_batch(env, n_rows: int = 8, device: str = DEVICE) -> dict:
    """A collated batch of the first training rows (with the prompts the direct objective decodes) on `device`."""
    from bearrec.prompts import ItemTexts
    from bearrec.train import TrainCollator, encode_rows

    _, _, ds, tok, template, trie = env
    batch = TrainCollator(tok.pad_token_id, trie, with_prompts=True)(encode_rows(ds.train[:n_rows], ItemTexts.titles(ds.items, template), tok))
    return {k: v.to(device) for k, v in batch.items()}


# ------------------------------------------------------------------------------------------ bf16 training
def objective_step(model, batch: dict, trie, objective, *, bf16: bool) -> torch.Tensor:
    """The loss of one batch as BearTrainer computes it; bf16: under autocast, as Trainer runs it with bf16=True."""
    from bearrec.train import objective_loss
    from bearrec.train.batches import IGNORE

    device = batch["input_ids"].device.type
    with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
        thresholds = None
        if objective.name == "direct":  # the beam search of the batch's prompts, without dropout or gradient
            steps = int((batch["labels"][:, 1:] != IGNORE).sum(1).max())
            was_training = model.training
            model.eval()
            with torch.no_grad():
                thresholds = beam_thresholds(model, batch["prompt_ids"], batch["prompt_mask"], trie,
                                             objective.num_beams, score_mode=objective.score_mode, max_steps=steps).float()
            model.train(was_training)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        total, count = objective_loss(logits, batch["labels"], batch["trie_nodes"], trie, objective, thresholds)
    return total.float() / count


def step_outcome(model_dir: Path, batch: dict, trie, objective, *, bf16: bool, device: str = DEVICE) -> dict:
    """Loss, flat gradient and float32 loss after one AdamW step, from the saved (float32) weights."""
    from bearrec.models import load_model

    torch.manual_seed(0)
    model = load_model(model_dir, dtype="float32").to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    loss = objective_step(model, batch, trie, objective, bf16=bf16)
    loss.backward()
    grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    optimizer.step()
    with torch.no_grad():
        after = objective_step(model, batch, trie, objective, bf16=False)
    return {"loss": float(loss.detach()), "grad": grad.double(), "after": float(after)}


def assert_close_losses(bf16: float, fp32: float, what: str) -> None:
    tol = BF16_TOLERANCE["loss_abs"] + BF16_TOLERANCE["loss_rel"] * abs(fp32)
    assert math.isfinite(bf16) and abs(bf16 - fp32) <= tol, \
        f"{what}: bf16 {bf16:.5f} vs float32 {fp32:.5f} (tolerance {tol:.4f})"


@pytest.mark.parametrize("method", METHODS)
def test_bf16_training_step_agrees_with_float32(env, method):
    from bearrec.train import ObjectiveConfig

    model_dir, trie = env[1], env[5].to(DEVICE)
    objective = ObjectiveConfig.for_method(method, num_beams=4)
    batch = training_batch(env)
    fp32 = step_outcome(model_dir, batch, trie, objective, bf16=False)
    bf16 = step_outcome(model_dir, batch, trie, objective, bf16=True)
    assert_close_losses(bf16["loss"], fp32["loss"], f"{method} loss")
    g16, g32 = bf16["grad"], fp32["grad"]
    cos = float(torch.nn.functional.cosine_similarity(g16, g32, dim=0))
    ratio = float(g16.norm() / g32.norm())
    assert cos >= BF16_TOLERANCE["grad_cos"], f"{method}: gradient cosine {cos:.4f}"
    assert abs(ratio - 1) <= BF16_TOLERANCE["grad_norm_rel"], f"{method}: gradient norm ratio {ratio:.4f}"
    assert fp32["after"] < fp32["loss"] and bf16["after"] < fp32["loss"], f"{method}: a step did not lower the loss"
    assert_close_losses(bf16["after"], fp32["after"], f"{method} loss after one AdamW step")


@pytest.mark.parametrize("method", ["direct", "bear-sft"])
def test_train_runs_end_to_end_on_cuda_in_bf16(env, tmp_path, method):
    """`train` on CUDA with bf16: finite losses, the run directory, and the same recommendations on CUDA and CPU."""
    import json

    from bearrec.recommend import Recommender
    from bearrec.train import ObjectiveConfig, load_config, train

    ds_dir, model_dir, ds = env[0], env[1], env[2]
    objective = ObjectiveConfig.for_method(method)
    overrides = [f"objective.name={objective.name}"] + ([f"objective.base={objective.base}"]
                                                       if objective.base != "msl" else [])
    config = load_config(None, [f"dataset={ds_dir}", f"output_dir={tmp_path / 'run'}", f"model={model_dir}",
                                "template=compact", "objective.num_beams=4", *overrides, "training.max_steps=3",
                                "training.per_device_train_batch_size=16", "training.learning_rate=1e-3",
                                "training.bf16=true", "training.logging_steps=1", "training.disable_tqdm=true",
                                "training.report_to=none", *(["training.use_cpu=true"] if DEVICE == "cpu" else [])])
    run = train(config)
    log = json.loads((run / "log_history.json").read_text())
    losses = [e["loss"] for e in log if "loss" in e]
    assert losses and all(math.isfinite(x) for x in losses)
    assert (run / "model").is_dir() and (run / "train_summary.json").is_file()
    on_gpu = Recommender.from_run(run, device=DEVICE)
    assert on_gpu.device.type == torch.device(DEVICE).type
    on_cpu = Recommender.from_run(run, device="cpu")
    for row in ds.test:
        gpu = on_gpu.recommend(list(row.history), k=4)
        cpu = on_cpu.recommend(list(row.history), k=4)
        assert [r["item_ids"] for r in gpu] == [r["item_ids"] for r in cpu]
        assert [r["score"] for r in gpu] == pytest.approx([r["score"] for r in cpu], abs=1e-3)


# ------------------------------------------------------------------------------------------ decoding
def _hyps(result) -> list[list[tuple]]:
    return [[tuple(h.tokens) for h in row] for row in result]


def _scores(result) -> list[float]:
    return [h.score for row in result for h in row]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("score", ["full", "masked"])
@pytest.mark.parametrize("B", [5, 10])
@pytest.mark.parametrize("layout", ["tree", "per-beam"])
def test_beam_search_on_cuda_equals_cpu(monkeypatch, seed, score, B, layout):
    """Items, order and scores; thresholds. 'tree': one cache row per prompt under a 4-D mask (sdpa);
    'per-beam': the per-beam cache copies that attention without custom masks (flash attention) falls back to."""
    bs = importlib.import_module("bearrec.decoding.beam_search")
    if layout == "per-beam":
        monkeypatch.setattr(bs, "tree_attention", lambda model: False)
    model = tiny_llama(V, seed=seed)
    trie = item_trie(random_sequences(120, V, seed=seed + 30, prefix_rate=0.2))
    ids, mask = random_prompts(5, V, min_len=2, max_len=20, seed=seed + 30)
    steps = trie.max_depth + 1
    cpu = beam_search(model, ids, mask, trie, B, score_mode=score)
    cpu_thr = beam_thresholds(model, ids, mask, trie, B, score_mode=score, max_steps=steps)
    gpu_model = model.to(DEVICE)
    gpu = beam_search(gpu_model, ids.to(DEVICE), mask.to(DEVICE), trie, B, score_mode=score)
    gpu_thr = beam_thresholds(gpu_model, ids.to(DEVICE), mask.to(DEVICE), trie, B, score_mode=score, max_steps=steps)
    assert _hyps(gpu) == _hyps(cpu)
    assert [sorted(h.item_ids) for row in gpu for h in row] == [sorted(h.item_ids) for row in cpu for h in row]
    assert _scores(gpu) == pytest.approx(_scores(cpu), abs=1e-4)
    torch.testing.assert_close(gpu_thr.cpu(), cpu_thr.cpu(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("score", ["full", "masked"])
def test_exact_top_k_on_cuda_equals_cpu(score):
    model = tiny_llama(V, seed=7)
    trie = item_trie(random_sequences(100, V, seed=7, prefix_rate=0.3))
    ids, mask = random_prompts(4, V, min_len=2, max_len=16, seed=7)
    cpu = exact_top_k(model, ids, mask, trie, 8, score_mode=score)
    gpu = exact_top_k(model.to(DEVICE), ids.to(DEVICE), mask.to(DEVICE), trie, 8, score_mode=score)
    assert [r.certified for r in gpu] == [r.certified for r in cpu]
    assert [[tuple(h.tokens) for h in r.items] for r in gpu] == [[tuple(h.tokens) for h in r.items] for r in cpu]
    assert [h.score for r in gpu for h in r.items] == pytest.approx([h.score for r in cpu for h in r.items], abs=1e-4)


@pytest.mark.parametrize("score", ["full", "masked"])
def test_count_above_on_cuda_equals_cpu(score):
    """The diagnosis's count of the entries above each positive: the same on CUDA as on CPU."""
    from bearrec.decoding import count_above

    model = tiny_llama(V, seed=7)
    trie = item_trie(random_sequences(100, V, seed=7, prefix_rate=0.3))
    ids, mask = random_prompts(4, V, min_len=2, max_len=16, seed=7)
    ranked = exact_top_k(model, ids, mask, trie, 30, score_mode=score)
    floors = [r.items[i].score - 1e-3 for r, i in zip(ranked, (0, 5, 12, 29))]
    cpu = count_above(model, ids, mask, trie, 10, floors, score_mode=score)
    gpu = count_above(model.to(DEVICE), ids.to(DEVICE), mask.to(DEVICE), trie, 10, floors, score_mode=score)
    assert [(r.count, r.certified) for r in gpu] == [(r.count, r.certified) for r in cpu] == \
        [(1, True), (6, True), (10, True), (10, True)]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("B,length_penalty,early_stopping", [(5, 0.0, False), (10, 1.0, "never"), (1, 0.0, False)])
def test_parity_with_hf_generate_on_cuda(seed, B, length_penalty, early_stopping):
    """tests/test_beam_search.py's oracle (HF generate + prefix_allowed_tokens_fn), with everything on CUDA."""
    from test_beam_search import assert_same_as_generate, hf_generate

    model = tiny_llama(V, seed=seed).to(DEVICE)
    seqs = random_sequences(60, V, seed=seed + 10)
    ids, mask = (t.to(DEVICE) for t in random_prompts(3, V, seed=seed))
    ours = beam_search(model, ids, mask, item_trie(seqs), B, length_penalty=length_penalty)
    theirs = hf_generate(model, ids, mask, seqs, B, length_penalty, early_stopping)
    assert_same_as_generate(ours, theirs)


# ------------------------------------------------------------------------------------------ LoRA
def test_lora_trained_on_cuda_saves_merges_and_loads_back(env, tmp_path):
    import json

    from bearrec.models import LoraSettings, load_model, load_trained, save_trained
    from bearrec.train import ObjectiveConfig

    model_dir, tok, trie = env[1], env[3], env[5].to(DEVICE)
    model = load_model(model_dir, dtype="float32", lora=LoraSettings(r=4, alpha=8, dropout=0.0)).to(DEVICE)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = training_batch(env)
    for _ in range(2):  # bf16 steps, as training with bf16=True takes them: the adapters move away from zero
        objective_step(model, batch, trie, ObjectiveConfig(name="bear", num_beams=4), bf16=True).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    assert any(float(p.detach().abs().max()) > 0 for n, p in model.named_parameters() if "lora_B" in n)
    model.eval()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits
        base = load_model(model_dir, dtype="float32").to(DEVICE)(input_ids=ids, attention_mask=mask).logits
    assert not torch.allclose(expected, base, atol=1e-3)
    save_trained(model, tok, tmp_path / "merged")
    merged, tok2 = load_trained(tmp_path / "merged", device=DEVICE)
    assert next(merged.parameters()).device.type == torch.device(DEVICE).type
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    assert tok2.get_vocab() == tok.get_vocab()
    save_trained(model, tok, tmp_path / "adapter", merge=False)
    assert json.loads((tmp_path / "adapter" / "bearrec_model.json").read_text())["format"] == "adapter"
    adapter, _ = load_trained(tmp_path / "adapter", device=DEVICE)
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids, attention_mask=mask).logits, expected, atol=1e-4, rtol=0)
        torch.testing.assert_close(adapter(input_ids=ids, attention_mask=mask).logits, expected, atol=1e-4, rtol=0)
    # decoding the merged model on CUDA returns what the unmerged one does
    prompts, pmask = batch["prompt_ids"], batch["prompt_mask"]
    assert _hyps(beam_search(merged, prompts, pmask, trie, 4)) == _hyps(beam_search(model, prompts, pmask, trie, 4))


def test_lora_merge_in_bf16_stays_close(env, tmp_path):
    """A bf16 base merged with its adapters: logits within 2% of their range of the unmerged model's (bf16 rounding)."""
    from bearrec.models import LoraSettings, load_model, load_trained, save_trained

    model_dir, tok = env[1], env[3]
    model = load_model(model_dir, dtype="bfloat16", lora=LoraSettings(r=4, alpha=8, dropout=0.0)).to(DEVICE)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    model.eval()
    batch = training_batch(env)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits.float()
    save_trained(model, tok, tmp_path / "merged")
    merged, _ = load_trained(tmp_path / "merged", device=DEVICE)
    assert next(merged.parameters()).dtype == torch.bfloat16
    with torch.no_grad():
        got = merged(input_ids=ids, attention_mask=mask).logits.float()
    span = float(expected.max() - expected.min())
    assert float((got - expected).abs().max()) <= 0.02 * span
