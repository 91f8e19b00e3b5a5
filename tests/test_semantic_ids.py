"""Semantic IDs (`bearrec index`): residual k-means codes, disambiguation, statistics, embedding sources, bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bearrec.cli import main
from bearrec.data.dataset import Dataset, load_dataset
from bearrec.errors import ConfigError, DataError
from bearrec.semantic_index import (build_index, code_stats, collaborative_embeddings, disambiguate, lm_embeddings,
                                    rq_kmeans)
from run_fixtures import write_small_dataset


def test_residual_kmeans_refines_level_by_level_and_is_seeded():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 8)) * 5
    x = np.repeat(centers, 10, axis=0) + rng.normal(size=(40, 8)) * 0.1
    codes = rq_kmeans(x, levels=2, codes=4, seed=3)
    assert codes.shape == (40, 2) and codes.max() < 4
    # the first level recovers the four well-separated groups exactly
    first = codes[:, 0].reshape(4, 10)
    assert all(len(set(row)) == 1 for row in first) and len(set(first[:, 0])) == 4
    assert (rq_kmeans(x, 2, 4, seed=3) == codes).all()


def test_disambiguation_makes_every_code_sequence_unique_and_the_stats_count_it():
    codes = np.array([[0, 1], [0, 1], [2, 3], [0, 1], [2, 0]])
    full = disambiguate(codes)
    assert full[:, -1].tolist() == [0, 1, 0, 2, 0]
    assert len({tuple(r) for r in full.tolist()}) == 5
    stats = code_stats(codes, full, k=4)
    assert stats["collision_rate_before"] == pytest.approx(3 / 5) and stats["collision_rate_after"] == 0
    assert stats["leaves"] == 3 and stats["items_per_leaf"]["max"] == 3 and stats["extra_code_max"] == 2
    assert stats["levels"][0]["unused_codes"] == 2 and stats["levels"][0]["items_per_code"]["max"] == 3


def test_collaborative_embeddings_read_the_training_split_only(tmp_path):
    write_small_dataset(tmp_path / "d")
    dataset = load_dataset(tmp_path / "d")
    first = collaborative_embeddings(dataset, dim=4)
    changed = Dataset(dataset.items, {"train": dataset.train, "valid": dataset.train[:1], "test": dataset.train[:2]})
    assert np.allclose(first, collaborative_embeddings(changed, dim=4))
    assert first.shape == (len(dataset.items), 4)


def test_the_index_command_writes_unique_codes_for_the_whole_catalog(tmp_path, capsys):
    write_small_dataset(tmp_path / "d")
    assert main(["index", str(tmp_path / "d"), "--levels", "2", "--codes", "4", "--seed", "1"]) == 0
    record = json.loads((tmp_path / "d" / "semantic_ids.json").read_text())
    items = load_dataset(tmp_path / "d").items
    assert list(record["items"]) == list(items) and all(len(c) == 3 for c in record["items"].values())
    assert len({tuple(c) for c in record["items"].values()}) == len(items)
    assert record["stats"]["collision_rate_after"] == 0 and "semantic IDs of 24 items" in capsys.readouterr().out
    again = build_index(tmp_path / "d", levels=2, codes=4, seed=1)
    assert again["items"] == record["items"]


def test_npy_and_lm_sources(tmp_path):
    from decoding_fixtures import tiny_llama

    write_small_dataset(tmp_path / "d")
    n = 24
    np.save(tmp_path / "e.npy", np.random.default_rng(0).normal(size=(n, 6)))
    record = build_index(tmp_path / "d", levels=2, codes=3, embeddings=f"npy:{tmp_path / 'e.npy'}")
    assert len(record["items"]) == n
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers

    model = tiny_llama(64, seed=0)
    model.save_pretrained(tmp_path / "lm")
    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "[PAD]": 1, **{f"w{i}": i + 2 for i in range(60)}}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                            eos_token="[PAD]").save_pretrained(tmp_path / "lm")
    vectors = lm_embeddings(str(tmp_path / "lm"), ["w1 w2", "w3", "w4 w5 w6"], batch_size=2)
    assert vectors.shape == (3, 32) and np.isfinite(vectors).all()
    # padding does not change a title's embedding
    assert np.allclose(lm_embeddings(str(tmp_path / "lm"), ["w3"])[0], vectors[1], atol=1e-5)
    # an encoder with absolute positions (BERT) loads too, and is as padding-invariant
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(tmp_path / "bert")
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(tmp_path / "bert")
    vectors = lm_embeddings(str(tmp_path / "bert"), ["w1 w2", "w3", "w4 w5 w6"], batch_size=3)
    assert vectors.shape == (3, 16) and np.allclose(lm_embeddings(str(tmp_path / "bert"), ["w3"])[0], vectors[1],
                                                    atol=1e-5)


def test_the_minilm_sentence_encoder_places_related_titles_together():
    from bearrec.semantic_index import minilm_path

    try:
        minilm_path()
    except ConfigError as e:
        pytest.skip(str(e))
    a, b, c = lm_embeddings("minilm-l6", ["Blue ballpoint pens, 12 pack", "Black ink ballpoint pens", "Desk lamp"])
    cos = lambda x, y: float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))  # noqa: E731
    assert a.shape == (384,) and cos(a, b) > cos(a, c) + 0.2


@pytest.mark.parametrize("array, message", [
    (np.zeros((5, 3)), r"has shape \(5, 3\), not \(24, dim\)"),
    (np.full((24, 3), np.nan), "NaN"),
])
def test_bad_embedding_files_are_named(tmp_path, array, message):
    write_small_dataset(tmp_path / "d")
    np.save(tmp_path / "e.npy", array)
    with pytest.raises(DataError, match=message) as e:
        build_index(tmp_path / "d", levels=2, codes=3, embeddings=f"npy:{tmp_path / 'e.npy'}")
    assert "e.npy" in str(e.value) and "Fix:" in str(e.value)


def test_bad_settings_are_refused(tmp_path):
    write_small_dataset(tmp_path / "d")
    with pytest.raises(ConfigError, match="between 2 and the 24 items"):
        build_index(tmp_path / "d", levels=2, codes=30)
    with pytest.raises(ConfigError, match="not a source"):
        build_index(tmp_path / "d", embeddings="tfidf")
    assert main(["index", str(tmp_path / "d"), "--codes", "99"]) == 2


# ---------------------------------------------------------------------------------------- training and decoding on codes
@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """A small dataset with 2-level, 4-code semantic IDs beside it (with collisions, so a third code)."""
    root = tmp_path_factory.mktemp("indexed")
    write_small_dataset(root / "data")
    build_index(root / "data", levels=2, codes=4, seed=0)
    return root


def test_item_texts_write_codes_and_show_titles_codes_or_both(indexed):
    from bearrec.prompts import get_template, item_texts

    dataset = load_dataset(indexed / "data")
    record = json.loads((indexed / "data" / "semantic_ids.json").read_text())
    template = get_template("compact", max_history=3)
    first = next(iter(dataset.items))
    codes = "".join(f"<{'abc'[level]}_{c}>" for level, c in enumerate(record["items"][first]))
    title = f'"{dataset.items[first]}"'
    shown = {h: item_texts(dataset, template, "semantic_id", h) for h in ("titles", "codes", "both")}
    assert all(t.response[first] == codes and t.template.item_format == "{title}" for t in shown.values())
    assert (shown["titles"].history[first], shown["codes"].history[first]) == (title, codes)
    assert shown["both"].history[first] == f"{title} {codes}"
    assert item_texts(dataset, template, "semantic_id").history == shown["codes"].history
    extra = record["stats"]["extra_code_max"] + 1
    assert len(shown["codes"].added_tokens) == 4 + 4 + extra
    plain = item_texts(dataset, template)
    assert plain.response == dataset.items and plain.template == template and not plain.added_tokens
    # titles written, codes shown: the response is the quoted title as before
    assert item_texts(dataset, template, "title", "codes").response[first] == title


def test_code_tokens_are_whole_tokens_for_the_tiny_model_and_for_a_pretrained_tokenizer(indexed, tmp_path):
    from bearrec.models import add_tokens, build_tiny_model, load_model, load_tokenizer, tiny_model_texts
    from bearrec.prompts import get_template, item_texts

    dataset = load_dataset(indexed / "data")
    texts = item_texts(dataset, get_template("compact", max_history=3), "semantic_id")
    tiny = build_tiny_model(tiny_model_texts(dataset, texts), tmp_path / "tiny", vocab_size=300, hidden_size=32,
                            intermediate_size=64, num_layers=1, added_tokens=texts.added_tokens)
    tokenizer = load_tokenizer(tiny)
    assert all(len(tokenizer(t, add_special_tokens=False)["input_ids"]) == 1 for t in texts.added_tokens)
    assert all(len(ids) == 3 + 1 for ids in texts.response_ids(tokenizer, list(dataset.items)))  # 3 codes + EOS
    # the BPE learnt nothing from the codes' characters: its vocabulary is the template's text, the bytes, the codes
    learnt = set(tokenizer.get_vocab()) - set(texts.added_tokens) - set(tokenizer.all_special_tokens)
    assert not any(len(t) > 1 and ("<" in t or "_" in t) for t in learnt)
    assert load_model(tiny).get_input_embeddings().weight.shape[0] == len(tokenizer)
    # a pretrained model's tokenizer (here: one built without the codes) gets them added, and its model grows
    plain = build_tiny_model(tiny_model_texts(dataset, item_texts(dataset, texts.template)), tmp_path / "plain",
                             vocab_size=300, hidden_size=32, intermediate_size=64, num_layers=1)
    tokenizer = load_tokenizer(plain)
    before = len(tokenizer)
    new = add_tokens(tokenizer, texts.added_tokens)
    assert new == list(range(before, before + len(texts.added_tokens))) and add_tokens(tokenizer, texts.added_tokens) == []
    assert all(len(ids) == 4 for ids in texts.response_ids(tokenizer, list(dataset.items)))
    model = load_model(plain, new_tokens=new)
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)


def _generate(rec, prompt, beams):
    """HF generate's beam search restricted to the trie (the score='full' reference)."""
    import torch

    eos = rec.tokenizer.eos_token_id

    def allowed(_, sent):
        return rec.trie.allowed(sent[len(prompt):].tolist()) or [eos]

    out = rec.model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             num_beams=beams, num_return_sequences=beams, do_sample=False, length_penalty=0.0,
                             early_stopping="never", prefix_allowed_tokens_fn=allowed, max_new_tokens=rec.trie.max_depth,
                             pad_token_id=rec.tokenizer.pad_token_id, eos_token_id=eos)
    return [tuple(s[len(prompt):].tolist()[: s[len(prompt):].tolist().index(eos) + 1]) for s in out]


@pytest.mark.parametrize("objective", ["sft", "msl", "bear", "direct"])
def test_every_objective_trains_on_codes_and_both_searches_decode_them(indexed, tmp_path, objective):
    from bearrec.recommend import Recommender
    from decoding_oracles import brute_force
    from bearrec.decoding import left_pad
    from run_fixtures import train_small_run

    run = train_small_run(indexed / "data", tmp_path / "run", "item_kind=semantic_id", "history=both",
                          f"objective.name={objective}")
    config = json.loads((run / "config.json").read_text())
    assert config["item_kind"] == "semantic_id" and "semantic_ids.json" in config["files"]
    rec = Recommender.from_run(run, device="cpu")
    items = list(rec.items)
    sequences = rec.texts.response_ids(rec.tokenizer, items)
    by_tokens = {tuple(s): i for s, i in zip(sequences, items)}
    # the trie is the catalog's code sequences, one leaf per item
    assert all(rec.trie.items_of(s) == [i] for s, i in zip(sequences, items)) and len(by_tokens) == len(items)
    assert rec.trie.num_items == len(items) and rec.trie.max_depth == 4  # 3 codes + EOS
    rows = rec.dataset.test[:3]
    for row in rows:
        prompt = rec.encode(row.history)
        ids, mask = left_pad([prompt], rec.pad_token_id)
        truth = [by_tokens[t] for _, t in brute_force(rec.model, ids, mask, sequences, rec.score_mode)[0][:5]]
        exact = rec.recommend(row.history, k=5, search="exact")
        assert [e["item_ids"][0] for e in exact] == truth and all(e["certified"] for e in exact)
        beam = [e["item_ids"][0] for e in rec.recommend(row.history, k=5, num_beams=5)]
        assert set(beam) <= set(items) and len(beam) == 5
        if rec.score_mode == "full":
            assert beam == [by_tokens[t] for t in _generate(rec, prompt, 5)]
    if objective == "bear":  # PruningRate over codes: every row's exact top-5 certified, the positive's rank known
        from bearrec.diagnose import diagnose_run

        summary = diagnose_run(run, num_beams=5, limit=4, max_expansions=200, progress=False)
        assert summary["n_rows"] == 4 and summary["certified_fraction"] == 1.0 and "pruning_rate@5" in summary
        assert summary["n_pruned"] <= summary["n_in_exact_top_b"] <= 4


def test_a_run_refuses_semantic_ids_changed_after_training(indexed, tmp_path):
    import shutil

    from bearrec.recommend import Recommender
    from run_fixtures import train_small_run

    shutil.copytree(indexed / "data", tmp_path / "data")
    run = train_small_run(tmp_path / "data", tmp_path / "run", "item_kind=semantic_id", "objective.name=sft")
    Recommender.from_run(run, device="cpu")
    build_index(tmp_path / "data", levels=2, codes=3, seed=1)
    with pytest.raises(DataError, match="semantic_ids.json.*does not have the SHA-256|semantic_ids.json.*bytes") as e:
        Recommender.from_run(run, device="cpu")
    assert "Fix:" in str(e.value)
    # nor does resuming its training (its checkpoints learnt the old codes)
    with pytest.raises(DataError, match="semantic_ids.json") as e:
        train_small_run(tmp_path / "data", tmp_path / "run", "item_kind=semantic_id", "objective.name=sft", resume=True)
    assert "train into another output_dir" in str(e.value)


@pytest.mark.parametrize("tied", [True, False])
def test_lora_on_a_pretrained_model_trains_the_new_code_embeddings(indexed, tmp_path, tied):
    import torch
    from transformers import set_seed

    from bearrec.models import LoraSettings, build_tiny_model, load_model, tiny_model_texts
    from bearrec.prompts import get_template, item_texts
    from bearrec.recommend import Recommender
    from run_fixtures import train_small_run

    dataset = load_dataset(indexed / "data")
    base = build_tiny_model(tiny_model_texts(dataset, item_texts(dataset, get_template("compact", max_history=3))),
                            tmp_path / "base", vocab_size=300, hidden_size=32, intermediate_size=64, num_layers=1)
    if not tied:  # an output layer of its own (Llama 3 8B, larger Qwen): its code rows must be trained too
        model = load_model(base)
        model.config.tie_word_embeddings = False
        model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone() * 1.5)
        model.save_pretrained(base)
    run = train_small_run(indexed / "data", tmp_path / "run", "item_kind=semantic_id", f"model={base}",
                          "lora={r: 4, alpha: 8, dropout: 0.0, target_modules: [q_proj, v_proj]}",
                          "training.learning_rate=0.05", "objective.name=sft")
    rec = Recommender.from_run(run, device="cpu")
    original = load_model(base)
    code_ids = rec.tokenizer.convert_tokens_to_ids(list(rec.texts.added_tokens))
    n = original.get_input_embeddings().weight.shape[0]
    assert min(code_ids) == n and max(code_ids) == n + len(code_ids) - 1
    # the code rows start where training started them (seed 42, the config's), the pretrained rows stay as they were
    set_seed(42)
    fresh = load_model(base, new_tokens=code_ids, lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    trainable = {name for name, p in fresh.named_parameters() if p.requires_grad}
    assert any("lora_" in name for name in trainable)
    for layer in ("embed_tokens", "lm_head") if not tied else ("embed_tokens",):
        assert any(layer in name and "trainable_tokens" in name for name in trainable), layer
    for get in (lambda m: m.get_input_embeddings().weight, lambda m: m.get_output_embeddings().weight):
        after, before = get(rec.model), get(original)
        assert after.shape[0] == n + len(code_ids)
        assert torch.equal(after[:n], before)  # LoRA, not full tuning: the pretrained rows are untouched
        # the merged, saved and reloaded model holds trained code rows: away from their start, and apart
        start = get(fresh.get_base_model()) if hasattr(fresh, "get_base_model") else get(fresh)
        assert not torch.allclose(after[code_ids], start[code_ids], atol=1e-4)
        assert float(after[code_ids].std(0).mean()) > 1e-3
    assert len(rec.recommend(dataset.test[0].history, k=3)) == 3


@pytest.mark.parametrize("change, message", [
    ("delete", "semantic_ids.json: is missing"),
    ("other dataset", "another version of the dataset"),
    ("drop item", "does not cover the catalog exactly"),
    ("duplicate", "gives two items the same codes"),
    ("out of range", "not 2 codes in \\[0, 4\\)"),
])
def test_bad_semantic_id_files_are_named_with_a_fix(indexed, tmp_path, change, message):
    import shutil

    from bearrec.prompts import get_template, item_texts

    shutil.copytree(indexed / "data", tmp_path / "d")
    path = tmp_path / "d" / "semantic_ids.json"
    record = json.loads(path.read_text())
    first, second = list(record["items"])[:2]
    if change == "delete":
        path.unlink()
    elif change == "other dataset":
        record["dataset_fingerprint"] = "sha256:0"
    elif change == "drop item":
        del record["items"][first]
    elif change == "duplicate":
        record["items"][first] = record["items"][second]
    else:
        record["items"][first] = [9, 0, 0]
    if change != "delete":
        path.write_text(json.dumps(record))
    with pytest.raises(DataError, match=message) as e:
        item_texts(load_dataset(tmp_path / "d"), get_template("compact"), "semantic_id")
    assert "Fix: run `bearrec index" in str(e.value)


def test_unknown_item_kinds_are_config_errors(indexed):
    from bearrec.train import load_config

    with pytest.raises(ConfigError, match="item_kind='codes' is unknown. Fix: use one of title, semantic_id"):
        load_config(None, [f"dataset={indexed / 'data'}", "items=codes"])
    with pytest.raises(ConfigError, match="history='ids' is unknown"):
        load_config(None, [f"dataset={indexed / 'data'}", "item_kind=semantic_id", "history=ids"])


def test_degenerate_codes_are_refused_with_their_figures_unless_accepted(tmp_path, capsys):
    """An all-zero embedding puts every item in one leaf: refused past --max-leaf-share, accepted with 1 and a
    warning that gives the figures; nothing is written when refused."""
    import numpy as np

    dataset = write_small_dataset(tmp_path / "d")
    np.save(tmp_path / "zeros.npy", np.zeros((len(dataset.items), 8)))
    with pytest.raises(ConfigError, match=r"degenerate semantic IDs: the largest leaf holds 24 of the 24 items "
                                          r"\(100\.0%\).*24 items have an all-zero embedding.*Fix:.*"
                                          r"--max-leaf-share 1"):
        build_index(tmp_path / "d", levels=2, codes=4, embeddings=f"npy:{tmp_path / 'zeros.npy'}")
    assert not (tmp_path / "d" / "semantic_ids.json").exists()
    record = build_index(tmp_path / "d", levels=2, codes=4, embeddings=f"npy:{tmp_path / 'zeros.npy'}",
                         max_leaf_share=1)
    assert record["stats"]["zero_embeddings"] == 24 and record["stats"]["collision_rate_before"] == 1.0
    assert "bearrec: warning: the largest leaf holds 24 of the 24 items" in capsys.readouterr().err
