"""Recommendations from a trained run: `Recommender.from_run(RUN_DIR)`, then `recommend` or `recommend_split`.

A recommendation list is the result of trie-constrained beam search with `num_beams` beams (default k),
best first; each entry is one title with every catalog item carrying it. When the catalog has fewer
distinct titles than k, fewer entries come back (never padding, never invented items). Under
`accelerate launch` / `torchrun`, `recommend_split` gives each process a contiguous block of batches and
the main process writes all rows in their original order.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from .data.dataset import Dataset, Interaction, load_dataset
from .decoding import Hypothesis, beam_search, left_pad
from .errors import ConfigError, DataError
from .io import atomic_open
from .prompts import PromptTemplate, encode_prompt, get_template
from .trie import ItemTrie


@dataclass
class Recommender:
    """A model, its tokenizer, the item trie and the prompt template: everything decoding needs."""

    model: Any
    tokenizer: Any
    trie: ItemTrie
    template: PromptTemplate
    items: dict[str, str]
    score_mode: str = "full"
    dataset: Dataset | None = None
    batch_size: int = 16

    def __post_init__(self) -> None:
        self.trie.check_tokenizer(self.tokenizer)
        vocab = self.model.get_input_embeddings().weight.shape[0]
        if self.trie.edge_token.numel() and int(self.trie.edge_token.max()) >= vocab:
            raise ConfigError(f"the item trie holds token id {int(self.trie.edge_token.max())} but the model has "
                              f"{vocab} embeddings. Fix: rebuild the trie with this model's tokenizer.")
        self.trie = self.trie.to(self.device)

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_run(cls, run_dir: str | Path, device: str | torch.device | None = None) -> "Recommender":
        """Load RUN_DIR/config.json, RUN_DIR/model/ and RUN_DIR/trie.pt (rebuilt from the catalog if absent)."""
        from .models import load_trained

        run_dir = Path(run_dir)
        config_path = run_dir / "config.json"
        if not config_path.is_file():
            raise ConfigError(f"{run_dir} is not a training run (config.json is missing). "
                              "Fix: pass the output_dir of `bearrec train`.")
        config = json.loads(config_path.read_text(encoding="utf-8"))
        for key in ("dataset", "template"):
            if key not in config:
                raise ConfigError(f"{config_path} has no {key!r}. Fix: re-run training with this bearrec version.")
        if device is None:
            from accelerate import PartialState

            device = PartialState().device
        model, tokenizer = load_trained(run_dir / "model", device=device)
        dataset = load_dataset(config["dataset"])
        template = get_template(config["template"], domain=config.get("domain", "item"),
                                max_history=int(config.get("max_history", 10)))
        trie_path = run_dir / "trie.pt"
        trie = ItemTrie.load(trie_path) if trie_path.is_file() else \
            ItemTrie.from_catalog(dataset.items, tokenizer, template)
        return cls(model=model, tokenizer=tokenizer, trie=trie, template=template, items=dataset.items,
                   score_mode=config.get("score_mode", "full"), dataset=dataset)

    # ------------------------------------------------------------------ decoding
    def encode(self, history: Sequence[str], where: str = "the history") -> list[int]:
        """Prompt token ids for a history of item ids, with clear errors for bad input."""
        if not history:
            raise DataError(f"{where} is empty: a recommendation needs at least one past item.")
        unknown = [i for i in history if i not in self.items]
        if unknown:
            raise DataError(f"{where} holds item id {unknown[0]!r}, which is not in the catalog.",
                            fix="use item ids of the dataset the model was trained on")
        ids = encode_prompt(self.tokenizer, self.template, [self.items[i] for i in history])
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit is not None and len(ids) + self.trie.max_depth > limit:
            raise DataError(f"the prompt of {where} has {len(ids)} tokens; with the longest title "
                            f"({self.trie.max_depth} tokens) that exceeds the model's context of {limit}.",
                            fix=f"lower max_history (now {self.template.max_history}) or use a shorter template")
        return ids

    def _decode(self, prompts: list[list[int]], k: int, num_beams: int | None) -> list[list[dict]]:
        """Beam search over a batch of prompt token lists (left-padded here); k entries per prompt."""
        beams = max(k, num_beams or k)
        ids, mask = left_pad(prompts, self.pad_token_id)
        hyps = beam_search(self.model, ids, mask, self.trie, beams, score=self.score_mode)
        return [[self._entry(h) for h in row[:k]] for row in hyps]

    def _entry(self, h: Hypothesis) -> dict:
        return {"item_ids": list(h.item_ids), "title": self.items[h.item_ids[0]], "score": float(h.score)}

    def recommend(self, history: Sequence[str], k: int = 10, *, num_beams: int | None = None) -> list[dict]:
        """The top-k titles for one history (item ids, oldest first): [{item_ids, title, score}], best first."""
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}.")
        return self._decode([self.encode(history)], k, num_beams)[0]

    def recommend_rows(self, rows: Sequence[Interaction], k: int = 10, *, num_beams: int | None = None,
                       progress: bool = True, rank: int = 0, world: int = 1) -> list[dict]:
        """Output records of `rows` (index = position); with world > 1, only this rank's share of batches.

        Rows are sorted by prompt length and cut into fixed batches before the batches are shared out, so
        every row is decoded in the same batch (same padding, same numerics) whatever the process count.
        """
        from tqdm.auto import tqdm

        prompts = [self.encode(r.history, where=f"row {i} (user {r.user_id})") for i, r in enumerate(rows)]
        order = sorted(range(len(rows)), key=lambda i: len(prompts[i]))
        batches = [order[s:s + self.batch_size] for s in range(0, len(order), self.batch_size)]
        lo, hi = _share(len(batches), rank, world)
        mine = batches[lo:hi]
        records: list[dict] = []
        with tqdm(total=sum(map(len, mine)), desc="recommend", unit="row", disable=not progress) as bar:
            for chunk in mine:
                for i, out in zip(chunk, self._decode([prompts[i] for i in chunk], k, num_beams)):
                    records.append({"index": i, "user_id": rows[i].user_id, "target": rows[i].target,
                                    "beams": max(k, num_beams or k), "recommendations": out})
                bar.update(len(chunk))
        return sorted(records, key=lambda r: r["index"])

    def recommend_split(self, split: str, output: str | Path, k: int = 10, *, num_beams: int | None = None,
                        limit: int | None = None, progress: bool = True) -> int:
        """Write one JSON line per row of `split` (see the module docstring); return the number of rows.

        Under several processes each decodes a contiguous share of the batches, the main process gathers
        them in the original row order and alone writes `output` (atomically).
        """
        if self.dataset is None:
            raise ConfigError("this Recommender has no dataset. Fix: load it with Recommender.from_run.")
        return self.recommend_interactions(self.dataset.split(split)[:limit], output, k, num_beams=num_beams,
                                           progress=progress)

    def recommend_file(self, histories: str | Path, output: str | Path, k: int = 10, *,
                       num_beams: int | None = None, progress: bool = True) -> int:
        """Like recommend_split, for the histories of a JSON Lines file (see `read_histories`)."""
        return self.recommend_interactions(read_histories(histories), output, k, num_beams=num_beams,
                                           progress=progress)

    def recommend_interactions(self, rows: Sequence[Interaction], output: str | Path, k: int = 10, *,
                               num_beams: int | None = None, progress: bool = True) -> int:
        """Decode `rows` (shared across processes when launched by several); write them as JSON Lines."""
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}.")
        rank, world = _dist_info()
        records = self.recommend_rows(rows, k, num_beams=num_beams, progress=progress and rank == 0,
                                      rank=rank, world=world)
        records = gather_records(records, world)
        if rank == 0:
            with atomic_open(output, "w", encoding="utf-8") as f:
                for rec in records:
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        if world > 1:
            torch.distributed.barrier()
        return len(records)


def gather_records(records: list[dict], world: int) -> list[dict]:
    """Every process's share of output records, on every process, in the original row order."""
    if world <= 1:
        return records
    import torch.distributed as dist

    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, records)
    return sorted((rec for part in gathered for rec in part), key=lambda r: r["index"])


def read_histories(path: str | Path) -> list[Interaction]:
    """Rows of a JSON Lines file of `{"history": [item ids], "user_id"?: str, "target"?: item id}`."""
    from .io import read_jsonl

    rows = []
    for line, obj in enumerate(read_jsonl(path), start=1):
        history = obj.get("history")
        if not isinstance(history, list):
            raise DataError("needs a \"history\" list of item ids.", path=path, line=line,
                            fix='write one {"history": ["id1", "id2", ...]} object per line')
        rows.append(Interaction(user_id=str(obj.get("user_id", line)), history=tuple(str(i) for i in history),
                                target=str(obj["target"]) if obj.get("target") is not None else "", timestamp=0))
    return rows


def _dist_info() -> tuple[int, int]:
    """(rank, world size), initialising the process group from the launcher's environment when needed."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    from accelerate import PartialState

    state = PartialState()  # sets up torch.distributed (gloo on CPU, nccl on GPU) under torchrun/accelerate
    return state.process_index, state.num_processes


def _share(n: int, rank: int, world: int) -> tuple[int, int]:
    """The contiguous block [lo, hi) of n batches that process `rank` of `world` decodes."""
    per, extra = divmod(n, world)
    lo = rank * per + min(rank, extra)
    return lo, lo + per + (1 if rank < extra else 0)
