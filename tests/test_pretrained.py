"""SmolLM2-135M, a real pretrained LLM, through the whole pipeline at toy size: LoRA and full fine-tuning, on titles
and on semantic IDs (code tokens added to its 49,152-token vocabulary), then both search modes and the diagnosis."""
from __future__ import annotations

import json

import pytest
import torch

from bearrec.data.dataset import load_dataset
from run_fixtures import train_small_run, write_small_dataset
from test_models import needs_smollm2


@needs_smollm2
@pytest.mark.slow
@pytest.mark.parametrize("tuning, items", [("lora", "title"), ("full", "title"), ("lora", "semantic_id")])
def test_smollm2_trains_recommends_and_diagnoses(tmp_path, tuning, items):
    from bearrec.diagnose import diagnose_run
    from bearrec.recommend import Recommender

    write_small_dataset(tmp_path / "data", n_items=12)
    if items == "semantic_id":
        from bearrec.semantic_index import build_index

        build_index(tmp_path / "data", levels=2, codes=3, seed=0)
    lora = ["lora={r: 4, alpha: 8, dropout: 0.0, target_modules: [q_proj, v_proj]}"] if tuning == "lora" else []
    run = train_small_run(tmp_path / "data", tmp_path / "run", "model=smollm2-135m", f"items={items}",
                          "objective.name=bear", "objective.base=sft", "training.max_steps=1",
                          "training.per_device_train_batch_size=4", "training.learning_rate=1e-4", *lora)
    config = json.loads((run / "config.json").read_text())
    assert config["model_source"] == "smollm2-135m" and config["score_mode"] == "full"
    rec = Recommender.from_run(run, device="cpu", batch_size=2)
    vocab = rec.model.get_input_embeddings().weight.shape[0]
    assert vocab == 49152 + len(rec.texts.added_tokens)  # the code tokens are whole tokens of the real vocabulary
    if items == "semantic_id":
        assert all(len(ids) == 4 for ids in rec.texts.response_ids(rec.tokenizer, list(rec.items)))  # 3 codes + EOS
    dataset = load_dataset(tmp_path / "data")
    history = list(dataset.test[0].history)
    beam = rec.recommend(history, k=3)
    exact = rec.recommend(history, k=3, search="exact")
    assert len(beam) == 3 and all(e["certified"] for e in exact)
    assert beam[0]["score"] <= exact[0]["score"] + 1e-4  # the exact list's best is the most probable item
    with torch.no_grad():
        summary = diagnose_run(run, split="test", num_beams=3, limit=2, batch_size=2, progress=False)
    assert summary["n_rows"] == 2 and summary["certified_fraction"] == 1.0
