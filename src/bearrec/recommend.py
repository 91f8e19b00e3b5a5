"""Recommendations from a trained run: `Recommender.from_run(RUN_DIR)`, then `recommend` or `recommend_split`.

A recommendation list is the result of trie-constrained beam search with `num_beams` beams (default k), or with
`search="exact"` the k most probable titles over the whole catalog (`certified_top_k`: best-first search, and the
whole catalog scored where it cannot certify; each row says whether it is certified), or of beam search's two
variants: "diverse" (groups of beams kept apart by a diversity penalty) and "d3" (D3's scores: ghost tokens left
out, an ID-based assistant mixed in); best first; each entry is one title with every catalog item carrying it.
`SearchOptions` holds the variants' settings. When the catalog has fewer
distinct titles than k, fewer entries come back (never padding, never invented items). Under
`accelerate launch` / `torchrun`, `recommend_split` gives each process a contiguous block of batches and
the main process writes all rows in their original order.
"""
from __future__ import annotations

import json
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .data.dataset import Dataset, Interaction
from .decoding import (D3, Hypothesis, IGScaling, Rescorer, beam_search, certified_top_k, diverse_beam_search,
                       left_pad)
from .errors import ConfigError, DataError
from .files import atomic_open, read_jsonl, refuse_folder
from .searches import ItemScorer, SearchOptions, check_search
from .trained_run import TrainedRun


@dataclass
class Recommender:
    """Recommendations from a trained run (`run`: model, tokenizer, trie, item texts, titles, score mode) with the
    decoding settings: prompts decoded at once, the search, and exact search's expansion budget."""

    run: TrainedRun
    batch_size: int = 16
    # "beam": constrained beam search with max(k, num_beams) beams; "exact": the k most probable items over the whole
    # catalog (best-first search on the trie within max_expansions model evaluations, then the whole catalog scored
    # with tree attention for the rows it could not certify: `certified_top_k`), each row marked certified
    search: str = "beam"
    max_expansions: int = 2000
    options: SearchOptions = field(default_factory=SearchOptions)

    def __post_init__(self) -> None:
        check_search(self.search)
        self.options.check()
        if self.run.model is None:
            raise ConfigError("a Recommender needs a model. Fix: load the run with TrainedRun.load, or attach the "
                              "model with run.with_model(model).")
        self._ig: IGScaling | None = None  # IGD's decoding: built at its first use (it reads the training targets)
        check = getattr(self.options.assistant, "check_dataset", None)  # a kept baseline knows its dataset
        if check is not None and self.dataset is not None:
            check(self.dataset)  # an assistant fitted on other rows may have seen this run's test targets
        self._assistant_columns = None if self.options.assistant is None else assistant_columns(
            self.options.assistant, self.trie.item_ids, self.options.assistant_name)

    # the run's parts, read where decoding uses them
    model = property(lambda self: self.run.model)
    tokenizer = property(lambda self: self.run.tokenizer)
    trie = property(lambda self: self.run.trie)
    texts = property(lambda self: self.run.texts)
    items = property(lambda self: self.run.items)
    score_mode = property(lambda self: self.run.score_mode)
    dataset = property(lambda self: self.run.dataset)
    device = property(lambda self: self.run.device)

    # what identifies the weights: decoding into a file keeps each finished batch in FILE.partial under it, and an
    # interrupted run resumes from there (None: nothing is kept)
    model_id = property(lambda self: self.run.model_id)

    def check_width(self, k: int, num_beams: int | None) -> None:
        """ConfigError when the list length or the beams exceed the catalog's distinct item texts: beam search would
        keep every prefix for minutes and still return no more than the catalog holds (the command line asks this;
        in Python a longer list is clipped to the catalog, as documented)."""
        width, distinct = max(k, num_beams or k), len(set(self.texts.response.values()))
        if width > distinct:
            raise ConfigError(f"a width of {width} (--k / --num-beams {width}) is more than the {distinct} distinct "
                              f"items of the catalog, so no list can be that long. Fix: use {distinct} or less.")

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_run(cls, run_dir: str | Path, device: str | torch.device | None = None, *,
                 on_dataset_change: str = "error", batch_size: int = 16, search: str = "beam",
                 max_expansions: int = 2000, dataset: Dataset | None = None,
                 options: SearchOptions | None = None) -> "Recommender":
        """A Recommender of the run in `run_dir`, loaded and checked by `TrainedRun.load` (which see).

        `batch_size` prompts are decoded at once (more keep a GPU busy; scores can differ in their last digits with
        the padding)."""
        run = TrainedRun.load(run_dir, device, on_dataset_change=on_dataset_change, dataset=dataset)
        return cls(run, batch_size=batch_size, search=search, max_expansions=max_expansions,
                   options=options or SearchOptions())

    # ------------------------------------------------------------------ decoding
    def encode(self, history: Sequence[str], where: str = "the history") -> list[int]:
        """Prompt token ids for a history of item ids, with clear errors for bad input."""
        history = item_id_list(history, where)
        if not history:
            raise DataError(f"{where} is empty: a recommendation needs at least one past item.",
                            fix="give at least one item id of the catalog (items.jsonl)")
        unknown = [i for i in history if i not in self.items]
        if unknown:
            raise DataError(f"{where} holds item id {unknown[0]!r}, which is not in the catalog.",
                            fix="use item ids of the dataset the model was trained on")
        ids = self.texts.prompt_ids(self.tokenizer, history)
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit is not None and len(ids) + self.trie.max_depth > limit:
            raise DataError(f"the prompt of {where} has {len(ids)} tokens; with the longest response "
                            f"({self.trie.max_depth} tokens) that exceeds the model's context of {limit}.",
                            fix=f"lower max_history (now {self.texts.template.max_history}) or use a shorter template")
        return ids

    def _decode(self, prompts: list[list[int]], histories: Sequence[Sequence[str]], k: int, num_beams: int | None,
                search: str) -> list[tuple[list[dict], dict]]:
        """(k entries, facts of the search) per prompt of a batch of prompt token lists (left-padded here) and the
        histories they were made of (D3's assistant reads those)."""
        ids, mask = left_pad(prompts, self.pad_token_id)
        if search == "exact":
            found = certified_top_k(self.model, ids, mask, self.trie, k, score_mode=self.score_mode,
                                    max_expansions=self.max_expansions)
            return [([self._entry(h) for h in r.items], {"search": "exact", "certified": r.certified,
                                                         "expansions": r.expansions}) for r in found]
        beams = max(k, num_beams or k)
        if search == "diverse":
            hyps = diverse_beam_search(self.model, ids, mask, self.trie, beams, groups=self.options.groups,
                                       diversity_penalty=self.options.diversity_penalty, score_mode=self.score_mode)
        else:
            hyps = beam_search(self.model, ids, mask, self.trie, beams, score_mode=self.score_mode,
                               rescore=self._rescorer(histories, search))
        facts = {"search": search, "beams": beams, **self.options.facts(search)}
        return [([self._entry(h) for h in row[:k]], facts) for row in hyps]

    def _rescorer(self, histories: Sequence[Sequence[str]], search: str) -> Rescorer | None:
        """How `search` rescores candidate tokens for a batch of histories: D3's or IGD's way (None: beam search's)."""
        if search == "d3":
            return self._d3(histories)
        if search != "igd":
            return None
        if self._ig is None:
            if self.dataset is None:
                raise ConfigError("IGD's decoding weighs items by their training counts, and this Recommender has no "
                                  "dataset. Fix: load it with Recommender.from_run.")
            counts = Counter(row.target for row in self.dataset.train)
            self._ig = IGScaling.from_counts(self.trie, torch.tensor([float(counts.get(i, 0))
                                                                      for i in self.trie.item_ids]),
                                             self.options.ig_weight)
        return self._ig

    def _d3(self, histories: Sequence[Sequence[str]]) -> D3:
        """D3 for a batch: with the assistant's scores of these histories, in the trie's item order, when there is one."""
        if self._assistant_columns is None or self.options.assistant_weight == 0:
            return D3()
        scores = np.asarray(self.options.assistant.score(histories))[:, self._assistant_columns]
        return D3.with_assistant(self.trie, torch.from_numpy(np.ascontiguousarray(scores)),
                                 self.options.assistant_weight)

    def _entry(self, h: Hypothesis) -> dict:
        return {"item_ids": list(h.item_ids), "title": self.items[h.item_ids[0]], "score": float(h.score)}

    def recommend(self, history: Sequence[str], k: int = 10, *, num_beams: int | None = None,
                  search: str | None = None) -> list[dict]:
        """The top-k titles for one history (item ids, oldest first): [{item_ids, title, score}], best first.

        Item ids are strings, as in the prepared dataset; integers are accepted and read as their decimal string
        (as the CLI reads JSON histories). A bare string is refused: it is one id, not a history. `search`
        ("beam" or "exact", default self.search): with "exact", each entry also says whether the list is certified."""
        check_counts(k, num_beams)
        search = check_search(search or self.search)
        entries, facts = self._decode([self.encode(history)], [item_id_list(history)], k, num_beams, search)[0]
        return [{**e, "certified": facts["certified"]} for e in entries] if search == "exact" else entries

    def recommend_rows(self, rows: Sequence[Interaction], k: int = 10, *, num_beams: int | None = None,
                       progress: bool = True, rank: int = 0, world: int = 1,
                       where: Sequence[str] | None = None, done: dict[int, dict] | None = None,
                       on_batch: Callable[[list[dict]], None] | None = None) -> list[dict]:
        """Output records of `rows` (index = position); with world > 1, only this rank's share of batches.

        Rows are sorted by prompt length and cut into fixed batches before the batches are shared out, so
        every row is decoded in the same batch (same padding, same numerics) whatever the process count, or
        whether a run resumed: a batch whose rows are all in `done` (index -> record) is taken from there, and
        `on_batch` receives each batch decoded here.
        """
        from tqdm.auto import tqdm

        where = where or [f"row {i} (user {r.user_id})" for i, r in enumerate(rows)]
        prompts = [self.encode(r.history, where=w) for r, w in zip(rows, where)]
        order = sorted(range(len(rows)), key=lambda i: len(prompts[i]))
        batches = [order[s:s + self.batch_size] for s in range(0, len(order), self.batch_size)]
        lo, hi = _share(len(batches), rank, world)
        mine = batches[lo:hi]
        records: list[dict] = []
        with tqdm(total=sum(map(len, mine)), desc="recommend", unit="row", disable=not progress) as bar:
            for chunk in mine:
                if done is not None and all(i in done for i in chunk):
                    records += [done[i] for i in chunk]
                else:
                    batch = [{"index": i, "user_id": rows[i].user_id, "target": rows[i].target, "k": k, **facts,
                              "recommendations": out}
                             for i, (out, facts) in zip(chunk, self._decode(
                                 [prompts[i] for i in chunk], [rows[i].history for i in chunk], k, num_beams,
                                 self.search))]
                    if on_batch is not None:
                        on_batch(batch)
                    records += batch
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
        found = read_histories(histories) if Path(histories).is_file() else []
        if not found:
            raise DataError("holds no histories." if Path(histories).is_file() else "no such file.", path=histories,
                            fix='write one {"history": ["id1", "id2", ...]} object per line')
        lines, rows = zip(*found)
        return self.recommend_interactions(rows, output, k, num_beams=num_beams, progress=progress,
                                           where=[f"{histories}, line {n}: the history" for n in lines])

    def recommend_interactions(self, rows: Sequence[Interaction], output: str | Path, k: int = 10, *,
                               num_beams: int | None = None, progress: bool = True,
                               where: Sequence[str] | None = None) -> int:
        """Decode `rows` (shared across processes when launched by several); write them as JSON Lines.

        In one process, with a known `model_id`, every finished batch is kept in OUTPUT.partial, so that an
        interrupted run resumes where it stopped (the same batches, so the same numbers) instead of starting over."""
        check_counts(k, num_beams)
        refuse_folder(output)
        rank, world = _dist_info()
        partial = None
        if world == 1 and self.model_id is not None:
            partial = PartialOutput(Path(output), self._decoding_key(rows, k, num_beams))
        records = self.recommend_rows(rows, k, num_beams=num_beams, progress=progress and rank == 0,
                                      rank=rank, world=world, where=where,
                                      done=partial.done if partial else None,
                                      on_batch=partial.append if partial else None)
        records = gather_records(records, world)
        if rank == 0:
            with atomic_open(output, "w", encoding="utf-8") as f:
                for rec in records:
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        if partial is not None:
            partial.remove()
        if world > 1:
            torch.distributed.barrier()
        return len(records)

    def _decoding_key(self, rows: Sequence[Interaction], k: int, num_beams: int | None) -> dict[str, Any]:
        """Everything the records of `rows` depend on: a partial output made with another is not reused."""
        return {"model": self.model_id, "rows": rows_digest(rows), "k": k, "num_beams": num_beams,
                "search": self.search, "max_expansions": self.max_expansions, "score_mode": self.score_mode,
                "batch_size": self.batch_size, **self.options.facts(self.search)}


def rows_digest(rows: Sequence[Interaction]) -> str:
    """SHA-256 of the rows' users, histories and targets: which rows a partial output holds records of."""
    import hashlib

    return hashlib.sha256(json.dumps([[r.user_id, list(r.history), r.target] for r in rows]).encode()).hexdigest()


class PartialOutput:
    """OUTPUT.partial: a header line with the decoding's key, then the records of each finished batch (flushed and
    synced as it ends). Read back only under the same key; a torn last line (a kill mid-write) is dropped."""

    def __init__(self, output: Path, key: dict[str, Any]):
        self.path = output.with_name(output.name + ".partial")
        self.key = json.loads(json.dumps(key))
        self.done: dict[int, dict] = {}
        lines = self.path.read_text(encoding="utf-8").splitlines() if self.path.is_file() else []
        try:
            same = bool(lines) and json.loads(lines[0]).get("partial_of") == self.key
        except (json.JSONDecodeError, AttributeError):
            same = False
        if same:
            for line in lines[1:]:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    break
                self.done[int(record["index"])] = record
            print(f"bearrec: resuming {output}: {len(self.done)} rows kept in {self.path.name}", file=sys.stderr)
        elif lines:
            print(f"bearrec: {self.path} was made with other settings or another model; decoding from the start.",
                  file=sys.stderr)
        self.started = False

    def append(self, records: list[dict]) -> None:
        if not self.started:  # written at the first finished batch: a run that fails before leaves no file
            with atomic_open(self.path, "w", encoding="utf-8") as f:  # the header, then the rows kept
                f.write(json.dumps({"partial_of": self.key}) + "\n")
                for record in self.done.values():
                    f.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.started = True
        with open(self.path, "a", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def item_id_list(history: Any, where: str = "the history") -> list[str]:
    """A history as a list of item-id strings: ids are strings; ints are read as their decimal string."""
    if isinstance(history, (str, bytes)) or not isinstance(history, Sequence):
        raise DataError(f"{where} must be a list of item ids, got {type(history).__name__} {history!r:.60}.",
                        fix='pass a list such as ["15"] (a bare string is one id, not a history)')
    ids = []
    for i in history:
        if isinstance(i, bool) or not isinstance(i, (str, int)):
            raise DataError(f"{where} holds {i!r} ({type(i).__name__}); item ids are strings (or integers).",
                            fix="use the item ids of the prepared dataset's items.jsonl")
        ids.append(str(i))
    return ids




def assistant_columns(assistant: ItemScorer, item_ids: Sequence[str], name: str | None) -> np.ndarray:
    """Where each of `item_ids` (the trie's items) is among the assistant's columns; a ConfigError when the assistant
    lacks one (it was fitted on another catalog)."""
    where = {str(item): j for j, item in enumerate(assistant.item_ids)}
    missing = [i for i in item_ids if i not in where]
    if missing:
        raise ConfigError(f"the assistant {name or ''} does not score {len(missing)} items of this run's catalog "
                          f"(first: {missing[0]!r}). Fix: fit the baseline on the dataset this run was trained on.")
    return np.array([where[i] for i in item_ids], dtype=np.int64)


def check_counts(k: Any, num_beams: Any) -> None:
    """ConfigError unless k is an integer >= 1 and num_beams is None or an integer >= 1."""
    for name, value in (("k", k), ("num_beams", num_beams)):
        if value is None and name == "num_beams":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {value!r}. Fix: e.g. {name}=10.")


def gather_records(records: list[dict], world: int) -> list[dict]:
    """Every process's share of output records, on every process, in the original row order."""
    if world <= 1:
        return records
    import torch.distributed as dist

    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, records)
    return sorted((rec for part in gathered for rec in part), key=lambda r: r["index"])


def read_histories(path: str | Path) -> list[tuple[int, Interaction]]:
    """(line number, row) of each line of a JSON Lines file of `{"history": [item ids], "user_id"?, "target"?}`."""
    rows = []
    for line, obj in read_jsonl(path, with_lines=True):
        history = obj.get("history")
        if not isinstance(history, list):
            raise DataError("needs a \"history\" list of item ids.", path=path, line=line,
                            fix='write one {"history": ["id1", "id2", ...]} object per line')
        history = item_id_list(history, f"{path}, line {line}: the history")
        rows.append((line, Interaction(user_id=str(obj.get("user_id", line)), history=tuple(history),
                                       target=str(obj["target"]) if obj.get("target") is not None else "",
                                       timestamp=0)))
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
