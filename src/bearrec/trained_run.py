"""A trained run loaded for decoding: model, tokenizer, item trie, item texts and score mode, each checked once.

`TrainedRun.load(RUN_DIR)` is the one place that turns a run directory (bearrec.run_dir, its layout and checksums)
into what a decoder needs; the Recommender, training's validation ranking, the diagnosis and the server share it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .data.dataset import Dataset
from .machine import check_device, use_determinism
from .errors import ConfigError, DataError
from .files import file_digest, verify_digest
from .models import MANIFEST, load_trained
from .prompts import ItemTexts, PromptTemplate, get_template, item_texts
from .run_dir import RunDir
from .semantic_ids import INDEX_FILE
from .trie import ItemTrie


@dataclass
class TrainedRun:
    """The bundle a decoder reads: the model (None until one is attached, as training's ranking does), its tokenizer,
    the item trie, how the model sees the items (`texts`), each item's title (`items`) and the score mode."""

    model: Any
    tokenizer: Any
    trie: ItemTrie
    texts: ItemTexts
    items: dict[str, str]
    score_mode: str = "full"
    dataset: Dataset | None = None
    # what identifies the model's weights (the SHA-256 of a saved model's manifest; None: unknown)
    model_id: str | None = None

    def __post_init__(self) -> None:
        self.trie.check_tokenizer(self.tokenizer)
        if self.model is not None:
            vocab = self.model.get_input_embeddings().weight.shape[0]
            if self.trie.edge_token.numel() and int(self.trie.edge_token.max()) >= vocab:
                raise ConfigError(f"the item trie holds token id {int(self.trie.edge_token.max())} but the model has "
                                  f"{vocab} embeddings. Fix: rebuild the trie with this model's tokenizer.")
            self.trie = self.trie.to(self.device)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def with_model(self, model: Any) -> "TrainedRun":
        """The same run with `model` attached (training's ranking decodes the model being trained)."""
        return replace(self, model=model)

    @classmethod
    def load(cls, run_dir: str | os.PathLike, device: str | torch.device | None = None, *,
             on_dataset_change: str = "error", dataset: Dataset | None = None) -> "TrainedRun":
        """The run's model, tokenizer, trie and dataset, each checked against what training recorded.

        A dataset that changed since training is an error; `on_dataset_change="warn"` only warns and builds the trie
        of the new catalog (for recommending to histories outside the splits). A `dataset` the caller loaded already
        is checked the same way instead of being read again."""
        run = RunDir(run_dir).require()
        config = run.need("dataset", "template")
        if config.get("deterministic"):
            use_determinism()  # decoded as trained: the same numbers on every rerun
        dataset = run.load_dataset(on_change=on_dataset_change, dataset=dataset)
        if device is None:
            from accelerate import PartialState  # accelerate's import is slow: only when no device is given

            device = PartialState().device
        else:
            device = check_device(device)
        texts = run_item_texts(run, dataset)
        model, tokenizer = load_run_model(run, device)
        if run.dataset_changed(dataset):  # on_dataset_change="warn": the trie of the new catalog
            trie = ItemTrie.from_catalog(texts.response, tokenizer, texts.template)
        else:
            trie = load_run_trie(run, tokenizer, texts)
        return cls(model=model, tokenizer=tokenizer, trie=trie, texts=texts, items=dataset.items,
                   score_mode=config.get("score_mode", "full"), dataset=dataset, model_id=run_model_id(run))


def run_template(run: RunDir) -> PromptTemplate:
    """The prompt template the run was trained with."""
    config = run.need("template")
    return get_template(config["template"], domain=config.get("domain", "item"),
                        max_history=int(config.get("max_history", 10)))


def run_item_texts(run: RunDir, dataset: Dataset) -> ItemTexts:
    """How the run's model sees `dataset`'s items (titles or semantic IDs, `prompts.item_texts`); semantic IDs are
    checked against the semantic_ids.json the run was trained with."""
    config = run.config()
    recorded = config.get("files", {}).get(INDEX_FILE)
    if recorded is not None and dataset.path is not None:
        verify_digest(Path(dataset.path) / INDEX_FILE, recorded,
                      "restore the semantic IDs the run was trained with (from a backup: `bearrec index` need not "
                      "give the same codes again), or train a new run on the new ones")
    return item_texts(dataset, run_template(run), config.get("item_kind", "title"), config.get("history"))


def load_run_trie(run: RunDir, tokenizer: Any, texts: ItemTexts) -> ItemTrie:
    """trie.pt, checked against its recorded checksum, the catalog and the tokenizer (rebuilt from `texts` if
    absent)."""
    items = texts.response
    path = run.trie_path
    if not path.is_file():
        return ItemTrie.from_catalog(items, tokenizer, texts.template)
    fix = "delete trie.pt (it is rebuilt from the catalog) or restore the run's own file"
    recorded = run.config().get("files", {}).get("trie.pt")
    if recorded is not None:
        verify_digest(path, recorded, fix)
    try:
        trie = ItemTrie.load(path)
    except Exception as e:  # torch.load of a damaged file raises many types
        raise DataError(f"is not a readable item trie ({type(e).__name__}).", path=path, fix=fix) from None
    if set(trie.item_ids) != set(items) or len(trie.item_ids) != len(items):
        raise DataError(f"holds {len(set(trie.item_ids))} items, not the {len(items)} of the run's catalog "
                        "(another run's trie, or the dataset changed).", path=path, fix=fix)
    try:
        trie.check_tokenizer(tokenizer)
    except ConfigError as e:
        raise DataError(str(e), path=path, fix=fix) from None
    return trie


def load_run_model(run: RunDir, device: Any = None) -> tuple[Any, Any]:
    """(model in eval mode, tokenizer) from RUN_DIR/model, its files checked against their recorded checksums."""
    if not run.model_dir.is_dir():
        raise DataError("holds no trained model (model/ is missing).", path=run.path,
                        fix="finish training (`bearrec train CONFIG --resume`)")
    return load_trained(run.model_dir, device=device)


def run_model_id(run: RunDir) -> str | None:
    """The SHA-256 of model/'s manifest (which lists every file's SHA-256): the trained weights' identity, or None
    for a model folder without one."""
    path = run.model_dir / MANIFEST
    return file_digest(path)["sha256"] if path.is_file() else None
