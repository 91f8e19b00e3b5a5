"""Helpers shared across test modules: a small prepared dataset, a tiny run trained on it in seconds, and copies."""
from __future__ import annotations

import shutil
from pathlib import Path

WORDS = ["red", "blue", "pen", "ink", "desk", "lamp", "paper", "clip", "tape", "note", "box", "chair"]


def write_small_dataset(folder: Path, n_items: int = 24, n_users: int = 30):
    """A prepared dataset (through save_dataset, so with a fingerprint) of short titles and sliding histories."""
    from bearrec.data.dataset import Dataset, Interaction, save_dataset

    items = {str(i): f"{WORDS[i % 12]} {WORDS[(i * 5) % 12]} {i}" for i in range(n_items)}
    ids = list(items)
    rows = [Interaction(f"u{u}", tuple(ids[(u + j) % n_items] for j in range(1 + u % 4)), ids[(u + 4) % n_items], u)
            for u in range(n_users)]
    dataset = Dataset(items=items, splits={"train": rows[:20], "valid": rows[20:25], "test": rows[25:]},
                      stats={"n_items": n_items})
    save_dataset(dataset, folder)
    return dataset


def train_small_run(dataset: Path, output_dir: Path, *overrides: str, resume: bool = False) -> Path:
    """`bearrec train` of a 1-layer tiny model for one epoch of two steps: seconds on a CPU, every run file written."""
    from bearrec.train import load_config, train

    config = load_config(None, [
        f"dataset={dataset}", f"output_dir={output_dir}", "model=tiny", "template=compact", "max_history=3",
        "tiny.vocab_size=300", "tiny.hidden_size=32", "tiny.intermediate_size=64", "tiny.num_layers=1",
        "tiny.num_heads=4", "objective.name=bear", "objective.num_beams=5",
        "training.num_train_epochs=1", "training.per_device_train_batch_size=10", "training.eval_strategy=steps",
        "training.eval_steps=1", "training.save_strategy=steps", "training.save_steps=1", "training.logging_steps=1", "training.disable_tqdm=true",
        "training.report_to=none", *overrides])
    return train(config, resume=resume)


def copy_run(small_run: Path, where: Path) -> Path:
    """A copy of the small run's folder and its dataset under `where` (same layout: where/run, where/data), whose
    config.json names the copy's dataset (else a check could silently fall back to the original's data)."""
    import json

    shutil.copytree(small_run.parent / "data", where / "data")
    shutil.copytree(small_run, where / "run")
    config = json.loads((where / "run" / "config.json").read_text())
    data = (where / "data").resolve()
    config.update(dataset=str(data), dataset_path=str(data))  # paths may be edited: config.json's checksum skips them
    (where / "run" / "config.json").write_text(json.dumps(config, indent=2))
    return where / "run"
