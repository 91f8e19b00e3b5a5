"""The run directory: its layout, its config.json, and the checks that it holds what it was made from.

RUN_DIR (= a training config's output_dir), as `bearrec train` writes it:
  config.json          the resolved config plus run facts: objective, method, score_mode, the dataset (as given,
                       absolute, relative to RUN_DIR) and its fingerprint, the size and SHA-256 of trie.pt, and
                       the checksum of all these settings but the paths (an edited setting is refused)
  trie.pt              the item trie built with the run's tokenizer and template
  model/               the selected model (`models.save_trained`; its manifest lists every file's size and SHA-256)
  checkpoints/         the Trainer's checkpoints (`--resume` continues the last complete one)
  incomplete-checkpoints/  checkpoints a kill left half-written, set aside by `--resume` (bearrec.train.checkpoints)
  log_history.json     trainer.state.log_history
  train_summary.json   train time, time per epoch, steps, best checkpoint, whole-run train loss
  timing.json          seconds per finished epoch, kept across resumes
  base_model/          model "tiny" only: the random small Llama the run started from
and, from `recommend` / `evaluate` / `diagnose`, one file per split and row limit:
  predictions[-SEARCH][-SPLIT][-firstN].jsonl, metrics[-SEARCH][-SPLIT][-firstN].json,
  diagnosis[-SPLIT][-firstN].json
and, in a baseline's run directory, scorer.safetensors (the fitted model, bearrec.baseline_scorers).
The split's name is left out for test, `-firstN` when every row was used, so a partial run never stands in for
the full one; `-SEARCH` marks the recommendations and metrics of a search other than beam search (exact, igd,
diverse, d3). Every command and the report read a run through `RunDir`; nothing else knows these names.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import DataError
from .data.dataset import Dataset, load_dataset
from .files import file_digest, read_json_file, strict_json, write_json
from .methods import ObjectiveConfig, objective_names
from .semantic_ids import INDEX_FILE

if TYPE_CHECKING:
    from .prompts import ItemTexts

ARTEFACT_EXTENSIONS = {"predictions": "jsonl", "metrics": "json", "diagnosis": "json"}
class RunDir:
    """One run directory: the paths of its files, its checked config.json, and the dataset it was trained on
(loading its model, tokenizer and trie for decoding is bearrec.trained_run's)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._config: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ------------------------------------------------------------------ layout
    config_path = property(lambda self: self.path / "config.json")
    trie_path = property(lambda self: self.path / "trie.pt")
    model_dir = property(lambda self: self.path / "model")
    checkpoints_dir = property(lambda self: self.path / "checkpoints")
    base_model_dir = property(lambda self: self.path / "base_model")
    log_history_path = property(lambda self: self.path / "log_history.json")
    summary_path = property(lambda self: self.path / "train_summary.json")
    timing_path = property(lambda self: self.path / "timing.json")

    def artefact(self, kind: str, split: str = "test", limit: int | None = None, search: str = "beam") -> Path:
        """`<kind>[-<search>][-<split>][-first<N>].<ext>`: left out are the split's name for test, the limit when
        None, and the search mode for beam search (so beam-search files keep their names)."""
        if kind not in ARTEFACT_EXTENSIONS:
            raise ValueError(f"unknown artefact kind {kind!r}")
        parts = ([kind] + ([search] if search != "beam" else []) + ([split] if split != "test" else [])
                 + ([f"first{limit}"] if limit is not None else []))
        return self.path / f"{'-'.join(parts)}.{ARTEFACT_EXTENSIONS[kind]}"

    def variants(self, kind: str, split: str = "test", search: str = "beam") -> list[tuple[int | None, Path]]:
        """The (limit, path) of every existing `kind` file of `split`: the full one first, then by more rows."""
        stem = kind + ("" if search == "beam" else f"-{search}") + ("" if split == "test" else f"-{split}")
        pattern = re.compile(re.escape(stem) + r"(?:-first(\d+))?\." + ARTEFACT_EXTENSIONS[kind] + "$")
        found = []
        for p in self.path.glob(f"{kind}*"):
            m = pattern.match(p.name)
            if m and p.is_file():
                found.append((None if m[1] is None else int(m[1]), p))
        return sorted(found, key=lambda lp: (0, 0) if lp[0] is None else (1, -lp[0]))

    def best(self, kind: str, split: str = "test", search: str = "beam") -> tuple[int | None, Path] | None:
        """The most complete existing `kind` file of `split` (every row, else the most rows), or None."""
        found = self.variants(kind, split, search)
        return found[0] if found else None

    # ------------------------------------------------------------------ config
    def is_run(self) -> bool:
        return self.config_path.is_file()

    def require(self) -> "RunDir":
        """Self, or a DataError when the folder is not a run directory."""
        if not self.path.is_dir():
            raise DataError("no such run directory.", path=self.path,
                            fix="pass the output_dir of `bearrec train`")
        if not self.is_run():
            raise DataError("not a run directory (config.json is missing).", path=self.path,
                            fix="pass the output_dir of `bearrec train`")
        return self

    def config(self) -> dict[str, Any]:
        """config.json, checked against its checksum, with objective fields added after a run was made read as
        the defaults it was trained with."""
        if self._config is None:
            self.require()
            stored = read_json_file(self.config_path, dict, "re-run `bearrec train` into a fresh output_dir")
            want = stored.get("config_sha256")
            if want is not None and config_checksum(stored) != want:
                raise DataError("was changed after training (its settings no longer match their recorded "
                                "checksum), so the run would decode with settings it was not trained with.",
                                path=self.config_path, fix="restore the file; only the dataset paths (dataset, "
                                "dataset_path, dataset_run_path) and output_dir may be edited")
            self._config = with_later_defaults(stored)
        return self._config

    def write_config(self, record: dict[str, Any]) -> None:
        """Write config.json with the checksum of its settings (everything but the paths of UNCHECKED_KEYS)."""
        record = {k: v for k, v in strict_json(record).items() if k != "config_sha256"}
        write_json(self.config_path, {**record, "config_sha256": config_checksum(record)})
        self._config = None

    def need(self, *keys: str) -> dict[str, Any]:
        """config(), with a DataError naming config.json when one of `keys` is missing."""
        config = self.config()
        for key in keys:
            if key not in config:
                raise DataError(f"has no {key!r}.", path=self.config_path,
                                fix="re-run training with this bearrec version")
        return config

    # ------------------------------------------------------------------ dataset
    def dataset_location(self) -> Path:
        """Where the run's dataset is now: at its recorded path relative to RUN_DIR (so a project moved or copied
        with its runs and data keeps working), else at its recorded absolute path, else as given."""
        config = self.need("dataset")
        tried = []
        for candidate in (self.path / config["dataset_run_path"] if config.get("dataset_run_path") else None,
                          config.get("dataset_path"),
                          config["dataset"],
                          self.path / config["dataset"] if not Path(config["dataset"]).is_absolute() else None):
            if candidate is None:
                continue
            candidate = Path(candidate)
            tried.append(str(candidate))
            if (candidate / "stats.json").is_file():
                return candidate
        raise DataError(f"the dataset this run was trained on is not found (looked in: {', '.join(dict.fromkeys(tried))}).",
                        path=self.config_path,
                        fix="move the prepared dataset back, or set \"dataset\" in config.json to its new folder")

    def dataset_changed(self, dataset: "Dataset") -> bool:
        """Whether `dataset` differs from the one the run was trained on (by the fingerprint training recorded)."""
        want = self.config().get("dataset_fingerprint")
        return want is not None and dataset.fingerprint != want

    def load_dataset(self, *, on_change: str = "error", dataset: "Dataset | None" = None) -> "Dataset":
        """The run's prepared dataset (or `dataset`, already loaded by the caller), checked: a different fingerprint
        than training saw is an error (or, with on_change="warn", a loud warning on stderr: for recommending to
        histories outside the splits)."""
        dataset = dataset if dataset is not None else load_dataset(self.dataset_location())
        if self.dataset_changed(dataset):
            want = self.config()["dataset_fingerprint"]
            message = (f"the dataset in {dataset.path} changed after this run was trained on it (fingerprint "
                       f"{dataset.fingerprint[:19]}…, trained on {want[:19]}…): its catalog or splits differ.")
            fix = "restore the dataset the run was trained on (or re-prepare it identically), or train a new run"
            if on_change == "warn":
                print(f"bearrec: WARNING: {self.config_path}: {message} Recommendations use the new catalog.",
                      file=sys.stderr)
            else:
                raise DataError(message, path=self.config_path, fix=fix)
        return dataset

    # ------------------------------------------------------------------ records
    def record_dataset(self, given: str, dataset: "Dataset") -> dict[str, Any]:
        """The config.json fields that let a run find its dataset from anywhere and notice when it changed."""
        location = Path(dataset.path if dataset.path is not None else given).resolve()
        return {"dataset": given, "dataset_path": str(location),
                "dataset_run_path": os.path.relpath(location, self.path.resolve()),
                "dataset_fingerprint": dataset.fingerprint}

    def record_files(self, dataset: "Dataset", texts: "ItemTexts") -> dict[str, Any]:
        """config.json's "files": the size and SHA-256 of trie.pt and, for semantic IDs, of the semantic_ids.json
        they came from (a file changed under the run is refused, not used)."""
        files = {"trie.pt": file_digest(self.trie_path)}
        if texts.added_tokens and dataset.path is not None:
            files[INDEX_FILE] = file_digest(Path(dataset.path) / INDEX_FILE)
        return files


# Where things are, not what the run is: a user may fix them by hand after moving a project (the dataset's identity
# is its fingerprint, which is checked).
UNCHECKED_KEYS = ("dataset", "dataset_path", "dataset_run_path", "output_dir", "config_sha256")


def config_checksum(record: dict[str, Any]) -> str:
    """SHA-256 of a config.json's settings in canonical JSON, leaving out UNCHECKED_KEYS."""
    settings = {k: v for k, v in record.items() if k not in UNCHECKED_KEYS}
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _renamed(record: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """`record` with its key `old` called `new` at the same place (unchanged when it lacks `old` or has `new`)."""
    if old not in record or new in record:
        return record
    return {(new if k == old else k): v for k, v in record.items()}


def with_later_defaults(stored: dict[str, Any]) -> dict[str, Any]:
    """A config.json written before an objective field (base, single_child_ce), `method`, the item kind or `name` existed,
    or when objective.num_beams was called beam_size and item_kind items, read as the defaults it was trained with, so that such a run can
    still be resumed or reused."""
    stored = _renamed(stored, "items", "item_kind")  # the item kind's name before 2026-12-07
    if "template" in stored:  # before semantic IDs, every run wrote titles
        stored = {"item_kind": "title", "history": None, "name": None, "deterministic": False, **stored}
    stored = _renamed(stored, "beam_size", "num_beams")  # the run record's copy of objective.num_beams
    objective = stored.get("objective_config")
    if isinstance(objective, dict):
        objective = _renamed(objective, "beam_size", "num_beams")
        stored = {**stored, "objective_config": objective}
    if isinstance(objective, dict) and objective.get("name") in objective_names():
        known = {f.name for f in fields(ObjectiveConfig)}
        filled = {**asdict(ObjectiveConfig(name=objective["name"])), **objective}
        stored = {**stored, "objective_config": filled}
        if "method" not in stored and set(filled) <= known:
            stored["method"] = ObjectiveConfig(**filled).method
    return stored
