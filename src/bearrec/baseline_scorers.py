"""A baseline's fitted scorer, kept in its run directory and loaded at decode time (D3's text-free assistant adds
its item scores to the language model's), so decoding needs no refit and never uses a file that changed.

RUN_DIR/scorer.safetensors holds tensors only (SASRec: the torch network's state_dict; popularity: the counts) and,
in its header's metadata, the method and the catalog's item ids in score order; SASRec's architecture is rebuilt
from config.json's "baseline" settings. No pickle is read. config.json's "files" records the file's size and SHA-256
(covered by the config's own checksum), checked before the file is parsed."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from .data.dataset import Dataset
from .errors import ConfigError, DataError
from .files import atomic_open, file_digest
from .machine import check_device
from .run_dir import RunDir

SCORER_FILE = "scorer.safetensors"
FORMAT = "bearrec-baseline-scorer/1"
DATASET_KEYS = ("dataset", "dataset_path", "dataset_run_path", "dataset_fingerprint")
REFIT_FIX = ("re-run the experiment (or bearrec.baselines.run_baseline) that made this run with the same arguments: "
             "it fits the scorer again (same seed) and keeps the predictions")


class Scorer(Protocol):
    """A fitted baseline: one score per catalog item (in `item_ids` order) for each history."""

    item_ids: list[str]

    def score(self, histories: Sequence[Sequence[str]]) -> np.ndarray: ...


class PopularityScorer:
    """MostPop: each item's count as a training target, the same for every history (no history item is filtered)."""

    def __init__(self, item_ids: Sequence[str], counts: np.ndarray):
        self.item_ids = list(item_ids)
        self.counts = np.asarray(counts, dtype=np.float64)

    def score(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(histories), len(self.counts)))


class SASRecScorer:
    """A fitted SASRec network (cornac's SASRecModel) scoring each history by its last `max_len` items over the whole
    catalog; scores equal cornac's `SASRec.score` (padding index = the number of items)."""

    def __init__(self, network: Any, item_ids: Sequence[str], max_len: int, device: str = "cpu",
                 batch_size: int = 512):
        self.network = network
        self.item_ids = list(item_ids)
        self.item_index = {item: i for i, item in enumerate(self.item_ids)}
        self.max_len = max_len
        self.pad_idx = len(self.item_ids)
        self.device = device
        self.batch_size = batch_size

    def score(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """The rows the library's `score(user_idx, history)` gives, computed in batches of padded histories."""
        import torch

        out = np.ones((len(histories), len(self.item_ids)), dtype=np.float32)  # cornac's score for an empty history
        filled = [i for i, h in enumerate(histories) if len(h)]
        self.network.eval()
        for start in range(0, len(filled), self.batch_size):
            block = filled[start:start + self.batch_size]
            seqs = []
            for i in block:
                ids = [self._index(item) for item in histories[i]][-self.max_len:]
                seqs.append([self.pad_idx] * (self.max_len - len(ids)) + ids)
            with torch.no_grad():
                scores = self.network.predict(None, torch.tensor(seqs, dtype=torch.long, device=self.device))
            out[block] = np.asarray(scores.cpu() if hasattr(scores, "cpu") else scores,
                                    dtype=np.float32).reshape(len(block), -1)
        return out

    def _index(self, item: str) -> int:
        try:
            return self.item_index[item]
        except KeyError:
            raise ConfigError(f"history item {item!r} is not in the SASRec scorer's catalog of "
                              f"{len(self.item_ids)} items. Fix: score histories of the dataset it was fitted on."
                              ) from None


# ---------------------------------------------------------------------------------------------- storage
def save_scorer(run: RunDir, scorer: Scorer) -> dict[str, Any]:
    """Write `scorer` to RUN_DIR/scorer.safetensors atomically, then record its size and SHA-256 in config.json's
    "files"; the digest."""
    import torch
    from safetensors.torch import save

    if isinstance(scorer, PopularityScorer):
        method, tensors = "popularity", {"counts": torch.from_numpy(np.array(scorer.counts))}
    elif isinstance(scorer, SASRecScorer):
        method = "sasrec"
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in scorer.network.state_dict().items()}
    else:
        raise TypeError(f"cannot store a {type(scorer).__name__}")
    metadata = {"format": FORMAT, "method": method, "item_ids": json.dumps(scorer.item_ids, ensure_ascii=False)}
    path = run.path / SCORER_FILE
    with atomic_open(path, "wb") as f:
        f.write(save(tensors, metadata=metadata))
    digest = file_digest(path)
    config = run.config()
    run.write_config({**config, "files": {**config.get("files", {}), SCORER_FILE: digest}})
    return digest


def scorer_kept(run: RunDir) -> bool:
    """Whether the run holds the scorer its config.json records (False when either is missing: run_baseline fits it
    again); a ConfigError naming the file when it changed after it was written."""
    recorded = run.config().get("files", {}).get(SCORER_FILE)
    path = run.path / SCORER_FILE
    if recorded is None or not path.is_file():
        return False
    _check_bytes(path, path.read_bytes(), recorded)
    return True


def _check_bytes(path: Path, data: bytes, recorded: dict[str, Any]) -> None:
    if len(data) != recorded.get("size") or hashlib.sha256(data).hexdigest() != recorded.get("sha256"):
        raise ConfigError(f"{path}: does not have the size and SHA-256 recorded in config.json when it was written "
                          "(corrupted or replaced), so it is not used. Fix: delete it and " + REFIT_FIX + ".")


@dataclass(frozen=True)
class StoredScorer:
    """A baseline's scorer loaded from its run directory, with the catalog order of its scores and the dataset
    fields of the run's config.json (so a caller can refuse a scorer fitted on another dataset)."""

    method: str
    item_ids: list[str]
    dataset_record: dict[str, Any]
    path: Path
    scorer: Scorer

    def score(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """(len(histories), len(item_ids)) scores, higher is better, columns in `item_ids` order."""
        return self.scorer.score(histories)

    @property
    def label(self) -> str:
        """What predictions record this scorer by: its run directory and its file's digest (`scorer_label`)."""
        return scorer_label(self.path.parent)

    def check_dataset(self, dataset: Dataset) -> None:
        """ConfigError unless `dataset` is the one the scorer was fitted on (its fingerprint and catalog order)."""
        want = self.dataset_record.get("dataset_fingerprint")
        if dataset.fingerprint != want or list(dataset.items) != self.item_ids:
            raise ConfigError(f"{self.path}: was fitted on another dataset (fingerprint {str(want)[:19]}…, "
                              f"this one {dataset.fingerprint[:19]}…). Fix: use a baseline run of this dataset.")


def scorer_label(run_dir: str | Path) -> str:
    """`RUN_DIR (scorer sha256:…)`, read from config.json alone: a refit scorer gets another label, so predictions
    made with the old one are not taken for the new one's."""
    recorded = RunDir(run_dir).config().get("files", {}).get(SCORER_FILE, {})
    return f"{Path(run_dir)} (scorer sha256:{str(recorded.get('sha256', 'none'))[:16]})"


def load_scorer(run_dir: str | Path, device: str | None = None) -> StoredScorer:
    """The checked scorer of baseline run `run_dir` (SASRec on `device`, default the one it was fitted on); a
    ConfigError naming the path when the folder is no baseline run or the file is missing, changed or unreadable."""
    run = RunDir(run_dir)
    try:
        config = run.config()
    except DataError as e:
        raise ConfigError(str(e)) from None
    if config.get("kind") != "baseline" or config.get("objective") not in ("popularity", "sasrec"):
        raise ConfigError(f"{run.config_path}: is not a baseline run (kind {config.get('kind')!r}). "
                          "Fix: pass the output folder of a popularity or sasrec baseline run.")
    path = run.path / SCORER_FILE
    recorded = config.get("files", {}).get(SCORER_FILE)
    if recorded is None or not path.is_file():
        raise ConfigError(f"{path}: is missing or not recorded in config.json (a run made before scorers were "
                          f"kept). Fix: {REFIT_FIX}.")
    data = path.read_bytes()
    _check_bytes(path, data, recorded)
    method = config["objective"]
    tensors, metadata = _parse(path, data)
    if metadata.get("format") != FORMAT or metadata.get("method") != method:
        raise ConfigError(f"{path}: holds format {metadata.get('format')!r} of method {metadata.get('method')!r}, "
                          f"not {FORMAT!r} of {method!r}. Fix: delete it and {REFIT_FIX}.")
    item_ids = json.loads(metadata.get("item_ids", "[]"))
    if method == "popularity":
        counts = tensors.get("counts")
        if counts is None or tuple(counts.shape) != (len(item_ids),):
            raise ConfigError(f"{path}: holds no counts of its {len(item_ids)} items. Fix: delete it and "
                              f"{REFIT_FIX}.")
        scorer: Scorer = PopularityScorer(item_ids, counts.numpy())
    else:
        scorer = _sasrec(path, tensors, item_ids, config.get("baseline", {}), device)
    return StoredScorer(method, item_ids, {k: config.get(k) for k in DATASET_KEYS}, path, scorer)


def _parse(path: Path, data: bytes) -> tuple[dict[str, Any], dict[str, str]]:
    """The tensors and the header's metadata of a safetensors file read as `data` (length-prefixed JSON header)."""
    from safetensors.torch import load

    try:
        size = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8:8 + size]).get("__metadata__") or {}
        return load(data), metadata
    except Exception as e:  # safetensors raises its own error type; any failure means the same thing here
        raise ConfigError(f"{path}: is not a readable safetensors file ({e}). Fix: delete it and {REFIT_FIX}.") from None


def _sasrec(path: Path, tensors: dict[str, Any], item_ids: list[str], settings: dict[str, Any],
            device: str | None) -> SASRecScorer:
    """cornac's SASRecModel rebuilt from the run's settings and loaded with the stored weights."""
    import torch

    try:  # cornac's network class: the module the SASRec recommender builds its `model` from
        from cornac.models.sasrec.sasrec import SASRecModel
    except ImportError as e:
        raise ConfigError(f"loading {path} needs the cornac library, which cannot be imported ({e}). "
                          "Fix: pip install 'bearrec[baselines]'") from None
    device = check_device(device or settings.get("device", "cpu"), "the SASRec scorer's device")
    max_len = settings.get("max_len") or 1
    with torch.random.fork_rng(devices=[]):  # its random initialisation, overwritten below, leaves the caller's RNG
        network = SASRecModel(item_num=len(item_ids), embedding_dim=settings.get("embedding_dim"), maxlen=max_len,
                              n_layers=settings.get("num_blocks"), n_heads=settings.get("num_heads"),
                              use_pos_emb=settings.get("use_pos_emb"), use_biases=settings.get("use_biases"),
                              dropout=settings.get("dropout"), pad_idx=len(item_ids), device=device)
    try:
        network.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0:2]
        raise ConfigError(f"{path}: does not fit the SASRec network of config.json's settings "
                          f"({' '.join(first)}). Fix: delete it and {REFIT_FIX}.") from None
    network.eval()
    return SASRecScorer(network, item_ids, max_len, device)
