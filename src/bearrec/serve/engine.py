"""The loaded run behind the server: checks a request's history, decodes a batch of histories, looks titles up.

Decoding goes through `Recommender.recommend_rows`, the path of `bearrec recommend --histories`, so a request
gets the list that command gives for its history (items and order; scores can differ in their last digits when
the history shares its batch with longer prompts, through the left padding). Every beam search uses the server's
`num_beams`; a request asking for k <= num_beams gets the first k of that list.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from ..data.dataset import Interaction
from ..errors import BearrecError
from ..recommend import Recommender
from .config import ServeConfig

SEARCHES = ("beam", "exact")
MAX_LISTED = 20  # unknown item ids named in one error


class FieldError(Exception):
    """A request that is well-formed but wrong (an unknown item id, a prompt too long): 422, naming the field."""

    def __init__(self, field: str, message: str, **extra: Any):
        super().__init__(message)
        self.field, self.message, self.extra = field, message, extra


@dataclass(frozen=True)
class RunInfo:
    """What every response names: the run directory's name and the model's checksum."""

    name: str
    model_id: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "model_id": self.model_id}


class Engine:
    """A `Recommender` per search mode (sharing one model), the server's beam count, and a title index."""

    def __init__(self, rec: Recommender, run_dir: str | Path, config: ServeConfig):
        self.config = config
        self.run = RunInfo(Path(run_dir).resolve().name, rec.model_id)
        # one batch of the batcher is one batch of recommend_rows (it sorts and cuts by batch_size)
        self.views = {s: replace(rec, search=s, batch_size=config.max_batch_size,
                                 max_expansions=config.max_expansions) for s in SEARCHES}
        self.items = rec.items
        self._titles = [(item_id, title, title.casefold()) for item_id, title in rec.items.items()]

    @classmethod
    def load(cls, config: ServeConfig, device: str | None = None) -> "Engine":
        """The run of `config`, through every check `bearrec recommend --histories` makes (DataError/ConfigError)."""
        rec = Recommender.from_run(config.run_dir, device=device, on_dataset_change="warn",
                                   batch_size=config.max_batch_size, search=config.search,
                                   max_expansions=config.max_expansions)  # the model in eval mode
        return cls(rec, config.run_dir, config)

    @property
    def device(self) -> str:
        return str(self.views["beam"].device)

    # ------------------------------------------------------------------ requests
    def check_history(self, history: Sequence[str], field: str) -> list[str]:
        """The history when every id is in the catalog, else a FieldError listing the unknown ones."""
        unknown = list(dict.fromkeys(i for i in history if i not in self.items))
        if unknown:
            shown = ", ".join(repr(i) for i in unknown[:MAX_LISTED])
            more = f" and {len(unknown) - MAX_LISTED} more" if len(unknown) > MAX_LISTED else ""
            raise FieldError(field, f"unknown item ids: {shown}{more}. Fix: use item ids of the run's catalog "
                                    f"(GET /v1/items?query=... finds them by title).", unknown_ids=unknown)
        return list(history)

    def batch_key(self, search: str, k: int) -> tuple:
        """Requests with the same key can share one search: every beam search has the server's beams; exact search
        depends on k."""
        return ("beam",) if search == "beam" else ("exact", k)

    def decode(self, search: str, requests: Sequence[tuple[list[str], int, str]]) -> list[list[dict] | Exception]:
        """Recommendations for (history, k, field) requests of one batch key, or the error of each bad one.

        Runs on the decoding thread: every use of the tokenizer and the model stays on that one thread."""
        rec = self.views[search]
        out: list[list[dict] | Exception] = []
        rows, ok = [], []
        for n, (history, k, field) in enumerate(requests):
            try:
                rec.encode(history, where=field)
            except BearrecError as e:  # e.g. a prompt longer than the model's context
                out.append(FieldError(field, str(e)))
                continue
            out.append([])
            rows.append(Interaction(user_id=str(n), history=tuple(history), target="", timestamp=0))
            ok.append(n)
        if not rows:
            return out
        k_max = max(requests[n][1] for n in ok)
        beams = self.config.num_beams if search == "beam" else None
        records = rec.recommend_rows(rows, k_max, num_beams=beams, progress=False)
        for n, record in zip(ok, records):
            entries = record["recommendations"][: requests[n][1]]
            if search == "exact":  # as Recommender.recommend marks them
                entries = [{**e, "certified": record["certified"]} for e in entries]
            out[n] = entries
        return out

    # ------------------------------------------------------------------ catalog
    def find(self, query: str, limit: int) -> tuple[int, list[dict[str, str]]]:
        """(matches, the first `limit`) of catalog items whose title holds every word of `query` (any case), or
        whose id is the query: the id first, then titles equal to it, starting with it, holding it, then the rest."""
        q = query.strip().casefold()
        words = re.split(r"\s+", q) if q else []

        def rank(entry: tuple[str, str, str]) -> tuple:
            item_id, _, low = entry
            return (item_id.casefold() != q, low != q, not low.startswith(q), q not in low, len(low), low, item_id)

        found = [e for e in self._titles if all(w in e[2] for w in words) or (q and e[0].casefold() == q)]
        found.sort(key=rank)
        return len(found), [{"item_id": i, "title": t} for i, t, _ in found[:limit]]
