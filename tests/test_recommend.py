"""Recommender: loading a run directory, output format, bad input, and a 2-process run equal to 1 process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bearrec.data.dataset import Dataset, Interaction, save_dataset
from bearrec.decoding import beam_search
from bearrec.errors import ConfigError, DataError
from bearrec.prompts import get_template, item_texts
from bearrec.trained_run import TrainedRun
from bearrec.recommend import Recommender, _share
from bearrec.trie import ItemTrie

WORDS = ["red", "blue", "pen", "ink", "desk", "lamp", "paper", "clip", "tape", "note", "box", "chair"]


def make_dataset(folder: Path) -> Dataset:
    items = {f"it{i}": f"{WORDS[i % 12]} {WORDS[(i * 5) % 12]} {i % 7}" for i in range(30)}
    items["it30"] = items["it3"]  # a duplicate title
    ids = list(items)
    rows = [Interaction(f"u{u}", tuple(ids[(u + j) % 31] for j in range(1 + u % 4)), ids[(u * 3) % 31], u)
            for u in range(13)]
    ds = Dataset(items=items, splits={"train": rows, "valid": rows[:3], "test": rows}, stats={"ok": True})
    save_dataset(ds, folder)
    return ds


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from bearrec.models import build_tiny_model, load_tokenizer, tiny_model_texts

    root = tmp_path_factory.mktemp("run")
    ds = make_dataset(root / "data")
    template = get_template("compact", max_history=3)
    build_tiny_model(tiny_model_texts(ds, item_texts(ds, template)), root / "model", vocab_size=300, hidden_size=32,
                     num_layers=1, num_heads=4, intermediate_size=64, max_position_embeddings=256)
    tok = load_tokenizer(root / "model")
    ItemTrie.from_catalog(ds.items, tok, template).save(root / "trie.pt")
    (root / "config.json").write_text(json.dumps({"dataset": str(root / "data"), "template": "compact",
                                                  "domain": "item", "max_history": 3, "score_mode": "masked"}))
    return root


def test_recommend_matches_beam_search(run_dir):
    rec = Recommender.from_run(run_dir, device="cpu")
    out = rec.recommend(["it1", "it2"], k=5)
    assert len(out) == 5
    assert [o["score"] for o in out] == sorted((o["score"] for o in out), reverse=True)
    ids = torch.tensor([rec.encode(["it1", "it2"])])
    hyps = beam_search(rec.model, ids, None, rec.trie, 5, score_mode="masked")[0]
    assert [o["item_ids"] for o in out] == [h.item_ids for h in hyps]
    assert all(o["title"] == rec.items[o["item_ids"][0]] for o in out)
    # more than the catalog: every distinct title once, clipped
    everything = rec.recommend(["it1"], k=50)
    assert len(everything) == 30 and sorted(i for o in everything for i in o["item_ids"]) == sorted(rec.items)


def test_recommend_split_format_and_rebuilt_trie(run_dir, tmp_path):
    rec = Recommender.from_run(run_dir, device="cpu")
    rec.batch_size = 4
    n = rec.recommend_split("test", tmp_path / "p.jsonl", k=3, progress=False)
    lines = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert n == len(lines) == 13
    assert [r["index"] for r in lines] == list(range(13))
    assert lines[4]["user_id"] == "u4" and lines[4]["target"] == rec.dataset.test[4].target
    assert lines[4]["recommendations"] == rec.recommend(list(rec.dataset.test[4].history), k=3)
    # without trie.pt the trie is rebuilt from the catalog, and 13 prompts a batch instead of 4: same output
    copy = tmp_path / "run"
    copy.mkdir()
    for name in ("config.json", "model"):
        (copy / name).symlink_to(run_dir / name)
    again = Recommender.from_run(copy, device="cpu", batch_size=13)
    assert again.batch_size == 13
    again.recommend_split("test", tmp_path / "q.jsonl", k=3, progress=False)
    for a, b in zip((tmp_path / "q.jsonl").read_text().splitlines(), lines):
        a = json.loads(a)
        assert [r["item_ids"] for r in a["recommendations"]] == [r["item_ids"] for r in b["recommendations"]]
        assert [r["score"] for r in a["recommendations"]] == pytest.approx([r["score"] for r in b["recommendations"]],
                                                                           abs=1e-5)


def test_bad_input(run_dir):
    rec = Recommender.from_run(run_dir, device="cpu")
    with pytest.raises(DataError, match="empty"):
        rec.recommend([])
    with pytest.raises(DataError, match="'nope'"):
        rec.recommend(["it1", "nope"])
    rec.model.config.max_position_embeddings = 8
    with pytest.raises(DataError, match="max_history"):
        rec.recommend(["it1", "it2", "it3"])
    rec.model.config.max_position_embeddings = 256
    other = ItemTrie.from_sequences([[5, 2]], ["x"], meta={"eos_token_id": 2, "vocab_size": 999})
    with pytest.raises(ConfigError, match="another tokenizer"):
        TrainedRun(rec.model, rec.tokenizer, other, rec.texts, rec.items)
    huge = ItemTrie.from_sequences([[5000, 2]], ["x"])
    with pytest.raises(ConfigError, match="token id 5000"):
        TrainedRun(rec.model, rec.tokenizer, huge, rec.texts, rec.items)
    with pytest.raises(DataError, match=r"model/config\.json: has no 'dataset'.*Fix"):
        Recommender.from_run(run_dir / "model")  # a model folder, not a run directory


def test_shares_cover_rows_in_order():
    for n in range(7):
        for world in (1, 2, 3):
            spans = [_share(n, r, world) for r in range(world)]
            assert [i for lo, hi in spans for i in range(lo, hi)] == list(range(n))


SCRIPT = """
import sys
from bearrec.recommend import Recommender
rec = Recommender.from_run(sys.argv[1], device="cpu")
rec.batch_size = 3
rec.recommend_split("test", sys.argv[2], k=4, progress=False)
import torch.distributed as dist
if dist.is_initialized():  # as the bearrec CLI does; a gloo group left to teardown can abort a rank
    dist.barrier()
    dist.destroy_process_group()
"""


@pytest.mark.multiproc
def test_two_processes_write_the_single_process_output(run_dir, tmp_path):
    """Same thread count in both runs (1 per process), so even the float digits must agree. The single-process
    run is the script's own steps, here in the test's process (no second interpreter to start)."""
    script = tmp_path / "rec.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rec = Recommender.from_run(run_dir, device="cpu")
        rec.batch_size = 3
        rec.recommend_split("test", tmp_path / "one.jsonl", k=4, progress=False)
    finally:
        torch.set_num_threads(threads)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
           str(script), str(run_dir), str(tmp_path / "two.jsonl")]
    two = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert two.returncode == 0, two.stderr[-3000:]
    assert (tmp_path / "two.jsonl").read_text() == (tmp_path / "one.jsonl").read_text()


def test_exact_search_returns_the_exact_top_k_with_its_certificate(run_dir, tmp_path):
    from bearrec.decoding import exact_top_k, left_pad

    rec = Recommender.from_run(run_dir, device="cpu")
    history = list(rec.dataset.test[2].history)
    got = rec.recommend(history, k=3, search="exact")
    ids, mask = left_pad([rec.encode(history)], rec.pad_token_id)
    want = exact_top_k(rec.model, ids, mask, rec.trie, 3, score_mode=rec.score_mode)[0]
    assert [e["item_ids"] for e in got] == [list(h.item_ids) for h in want.items]
    assert all(e["certified"] is want.certified for e in got) and want.certified
    scores = [e["score"] for e in got]
    assert scores == sorted(scores, reverse=True)
    beam = rec.recommend(history, k=3)  # beam search never finds a more probable list than the certified exact one
    assert beam[0]["score"] <= scores[0] + 1e-5 and "certified" not in beam[0]
    rec.search = "exact"
    n = rec.recommend_split("test", tmp_path / "p.jsonl", k=3, limit=4, progress=False)
    rows = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert n == 4 and all(r["search"] == "exact" and r["k"] == 3 and isinstance(r["certified"], bool) for r in rows)
    assert [e["item_ids"] for e in rows[2]["recommendations"]] == [e["item_ids"] for e in got]  # batched: same items
    assert [e["score"] for e in rows[2]["recommendations"]] == pytest.approx(scores, abs=1e-5)
    with pytest.raises(ConfigError, match="search must be one of beam, exact"):
        rec.recommend(history, k=3, search="greedy")


def test_an_interrupted_decoding_resumes_from_its_finished_batches(run_dir, tmp_path, monkeypatch, capsys):
    rec = Recommender.from_run(run_dir, device="cpu", batch_size=4)  # 13 test rows: 4 batches
    assert rec.model_id is None  # a plain model folder: nothing identifies its weights, so nothing is resumed
    rec.run.model_id = "weights-1"
    rec.recommend_split("test", tmp_path / "whole.jsonl", k=3, progress=False)
    real, calls = rec._decode, []

    def decode(prompts, *args, stop_at=None):
        calls.append(len(prompts))
        if len(calls) == stop_at:
            raise KeyboardInterrupt
        return real(prompts, *args)

    out, partial = tmp_path / "p.jsonl", tmp_path / "p.jsonl.partial"
    monkeypatch.setattr(rec, "_decode", lambda p, *a: decode(p, *a, stop_at=3))
    with pytest.raises(KeyboardInterrupt):
        rec.recommend_split("test", out, k=3, progress=False)
    assert not out.exists() and len(partial.read_text().splitlines()) == 1 + 8  # the header, two batches
    calls.clear()
    monkeypatch.setattr(rec, "_decode", lambda p, *a: decode(p, *a))
    rec.recommend_split("test", out, k=3, progress=False)
    assert len(calls) == 2 and "resuming" in capsys.readouterr().err  # only the two batches left
    assert out.read_text() == (tmp_path / "whole.jsonl").read_text() and not partial.exists()
    # a partial made with other settings, or by other weights, is not used
    for change in ({"k": 2}, {"model": "weights-2"}):
        calls.clear()
        monkeypatch.setattr(rec, "_decode", lambda p, *a: decode(p, *a, stop_at=2))
        with pytest.raises(KeyboardInterrupt):
            rec.recommend_split("test", out, k=3, progress=False)
        rec.run.model_id = change.get("model", "weights-1")
        calls.clear()
        monkeypatch.setattr(rec, "_decode", lambda p, *a: decode(p, *a))
        rec.recommend_split("test", out, k=change.get("k", 3), progress=False)
        assert len(calls) == 4 and "other settings or another model" in capsys.readouterr().err
