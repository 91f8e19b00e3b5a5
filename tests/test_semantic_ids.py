"""Semantic IDs (`bearrec index`): residual k-means codes, disambiguation, statistics, embedding sources, bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bearrec.cli import main
from bearrec.data.dataset import Dataset, load_dataset
from bearrec.errors import ConfigError, DataError
from bearrec.semantic_ids import (build_index, code_stats, collaborative_embeddings, disambiguate, lm_embeddings,
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
    from bearrec.decoding.testing import tiny_llama

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
