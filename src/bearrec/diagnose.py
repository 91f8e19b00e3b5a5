"""Pruning diagnostics: does beam search lose positives that are among the B most probable items?

PruningRate@B (the paper's definition): among rows whose positive item is in the exact top-B by
overall probability P(y|x), the share that beam search with B beams does not return. A positive is in the exact
top B when fewer than B catalog entries outrank it: best-first search over the prefixes scoring above it, stopped
at the B-th entry found (`certified_count_above`; the whole catalog is scored exactly where that search runs out of
expansions; with attention that takes no 4-D mask such a row stays uncertified), or read from the run's exact
search predictions. For each pruned row, the step at which the
positive's prefix leaves the beam is the first step t whose cumulative log-probability
log P(y_<=t|x) falls below the B-th kept prefix's (`beam_thresholds`); a pruning is "token-caused"
when the positive token itself ranks below B among the valid children at that step (the paper's
"over 70%"). Ranks of the positive's tokens at every step are collected for all rows.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from .decoding import beam_search, beam_thresholds, certified_count_above, left_pad, sequence_log_probs
from .errors import DataError
from .evaluate import current_predictions
from .files import refuse_folder, write_json
from .metrics import hit_ranks
from .recommend import PartialOutput, Recommender, rows_digest
from .run_dir import RunDir


@dataclass
class RowDiagnosis:
    """What happened to one row's positive item under beam search and under exact search."""

    in_exact_top_b: bool
    certified: bool
    returned: bool
    pruned_step: int | None  # 1-based step where the positive left the beam (pruned rows only)
    token_outside_top_b: bool | None  # at that step, was the positive token itself outside the top B?
    ranks: list[int]  # rank of each positive token among the valid children of its step
    log_prob: float  # log P(y|x) of the positive under the decoding score


TIE_TOLERANCE = 1e-4
"""An entry outranks a positive when it scores more than this above it: in float32, far above the noise between a
search's scores and teacher-forced ones, far below any real gap. (The positive's own entry is never counted, so in
bf16, where that noise is larger, only near-ties with other entries can go either way.)"""


def diagnose_batch(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, trie: Any,
                   positives: Sequence[Sequence[int]], targets: Sequence[str], num_beams: int, *,
                   score_mode: str = "full", max_expansions: int = 2000,
                   beam_lists: Sequence[Sequence[tuple[Sequence[str], float | None]]] | None = None,
                   exact_hits: Sequence[tuple[bool, bool]] | None = None) -> list[RowDiagnosis]:
    """Diagnose a batch of left-padded prompts whose positive items have token sequences `positives`.

    Known lists are not searched again: `beam_lists`, each row's beam search list as (item ids, score) entries, and
    `exact_hits`, each row's (positive in the exact top B, certified). Without `exact_hits`, a positive is in the
    exact top B when fewer than B catalog entries outrank it (`certified_count_above` over its own score, the beam's
    entries above it counted as found): no top B is proven, so a positive far down the ranking costs no search.
    The beam thresholds that date a pruning are computed only for a batch with a pruned row."""
    if beam_lists is None:
        beams = beam_search(model, input_ids, attention_mask, trie, num_beams, score_mode=score_mode)
        beam_lists = [[(h.item_ids, h.score) for h in b] for b in beams]
    returned = [any(t in ids for ids, _ in lst) for t, lst in zip(targets, beam_lists)]
    seq = sequence_log_probs(model, input_ids, attention_mask, positives, trie=trie, score_mode=score_mode)
    if exact_hits is None:
        floors = [float(lp.sum()) + TIE_TOLERANCE for lp in seq.log_probs]
        known = [[trie.item_node(ids[0]) for ids, s in lst if s is not None and s > fl and t not in ids]
                 for lst, fl, t in zip(beam_lists, floors, targets)]
        counts = certified_count_above(model, input_ids, attention_mask, trie, num_beams, floors, known=known,
                                       exclude=[trie.node_of(p) for p in positives], score_mode=score_mode,
                                       max_expansions=max_expansions)
        exact_hits = [(c.count < num_beams, c.certified) for c in counts]
    thresholds = None
    if any(hit and not ret for (hit, _), ret in zip(exact_hits, returned)):
        thresholds = beam_thresholds(model, input_ids, attention_mask, trie, num_beams, score_mode=score_mode,
                                     max_steps=max(len(p) for p in positives)).cpu()
    out = []
    for i in range(len(targets)):
        in_exact, certified = exact_hits[i]
        cumulative = seq.log_probs[i].cumsum(0)
        ranks = seq.ranks[i].tolist()
        step = None
        if in_exact and not returned[i]:
            n = len(positives[i])
            below = (cumulative[: n - 1] < thresholds[i, : n - 1]).nonzero()
            # A positive whose every prefix stayed in the beam was lost when its complete title was
            # outranked among the finished hypotheses: that happens at its last (EOS) step.
            step = int(below[0]) + 1 if below.numel() else n
        out.append(RowDiagnosis(
            in_exact_top_b=in_exact, certified=certified, returned=bool(returned[i]), pruned_step=step,
            token_outside_top_b=None if step is None else ranks[step - 1] > num_beams,
            ranks=ranks, log_prob=float(cumulative[-1])))
    return out


def pruning_from_predictions(beam: Sequence[dict], exact: Sequence[dict]) -> dict:
    """PruningRate@K over every row decoded both ways: among rows whose target is in the exact search's top K,
    the share beam search did not return (K: the lists' length). No model call, so it covers a whole split where
    `diagnose_run` covers its first rows; it gives no steps or ranks."""
    if not exact:
        raise DataError("no exact-search predictions to compare. Fix: decode the split with search='exact' too.")
    by_index = {r["index"]: r for r in beam}
    missing = [r["index"] for r in exact if r["index"] not in by_index]
    if missing:
        raise DataError(f"{len(missing)} rows decoded by exact search have no beam search prediction (first index "
                        f"{missing[0]}). Fix: decode the same rows with both searches.")
    in_top = hit_ranks(exact) > 0
    pruned = in_top & (hit_ranks([by_index[r["index"]] for r in exact]) == 0)
    k = max(r["k"] for r in exact)
    n_top, n_pruned = int(in_top.sum()), int(pruned.sum())
    return {f"pruning_rate@{k}": n_pruned / n_top if n_top else None, "n_rows": len(exact),
            "n_in_exact_top_k": n_top, "n_pruned": n_pruned,
            "certified_fraction": sum(bool(r.get("certified")) for r in exact) / len(exact)}


def summarize(rows: Sequence[RowDiagnosis], num_beams: int) -> dict:
    """The aggregate numbers of `diagnosis.json` (read by `bearrec report`); a rate of no rows is None."""
    b = num_beams
    in_top = [r for r in rows if r.in_exact_top_b]
    pruned = [r for r in in_top if not r.returned]
    certified_top = [r for r in in_top if r.certified]
    rank_hist: Counter = Counter()
    for r in rows:
        rank_hist.update(str(k) if k <= b else f">{b}" for k in r.ranks)
    step_hist = Counter(str(r.pruned_step) for r in pruned)
    return {
        f"pruning_rate@{b}": len(pruned) / len(in_top) if in_top else None,
        f"pruning_rate_certified@{b}": (sum(not r.returned for r in certified_top) / len(certified_top)
                                        if certified_top else None),
        "num_beams": b,
        "n_rows": len(rows),
        "n_in_exact_top_b": len(in_top),
        "n_pruned": len(pruned),
        "n_returned": sum(r.returned for r in rows),
        "certified_fraction": sum(r.certified for r in rows) / len(rows) if rows else None,
        "pruned_token_outside_top_b_share": (sum(bool(r.token_outside_top_b) for r in pruned) / len(pruned)
                                             if pruned else None),
        "pruned_step_histogram": dict(sorted(step_hist.items(), key=lambda kv: int(kv[0]))),
        "positive_token_rank_histogram": {k: rank_hist[k] for k in [*map(str, range(1, b + 1)), f">{b}"]
                                          if rank_hist[k]},
    }


def diagnose_run(run_dir: str | Path, *, split: str = "test", num_beams: int = 10, limit: int | None = None,
                 max_expansions: int = 2000, batch_size: int = 8, output: str | Path | None = None,
                 progress: bool = True) -> dict:
    """Diagnose a run on a split (its first `limit` rows); write diagnosis[-<split>][-first<N>].json. Where the run
    holds predictions of the whole split with `num_beams` items (`bearrec evaluate`, with `--search exact` for the
    exact top B), each row's hit is read from them instead of searched again (`lists_from` says which)."""
    run = RunDir(run_dir).require()
    rec = Recommender.from_run(run.path)
    rows = rec.dataset.split(split)[:limit]
    prompts = [rec.encode(r.history, where=f"row {i} of {split}") for i, r in enumerate(rows)]
    positives = rec.texts.response_ids(rec.tokenizer, [r.target for r in rows])
    output = Path(output or run.artefact("diagnosis", split, limit))
    refuse_folder(output)
    beam_lists = None  # each row's beam list as (item ids, score) entries
    exact_hits = None  # each row's (positive in the exact top B, certified)
    lists_from = {"beam": "beam search", "exact": "count of the entries above each positive"}
    for search in lists_from:
        path = run.artefact("predictions", split, search=search)
        records = current_predictions(path, len(rec.dataset.split(split)), num_beams, search)
        if records is None:
            continue
        records = records[:len(rows)]
        lists_from[search] = path.name
        if search == "beam":
            beam_lists = [[(e["item_ids"], e.get("score")) for e in r["recommendations"]] for r in records]
        else:
            exact_hits = [(bool(h > 0), bool(r.get("certified"))) for h, r in zip(hit_ranks(records), records)]
    # every finished batch is kept in OUTPUT.partial, so an interrupted diagnosis resumes with the same batches
    partial = None
    if rec.model_id is not None:
        partial = PartialOutput(output, {"model": rec.model_id, "rows": rows_digest(rows), "num_beams": num_beams,
                                         "max_expansions": max_expansions,
                                         "batch_size": batch_size, "score_mode": rec.score_mode})
    results: list[RowDiagnosis] = []
    for start in tqdm(range(0, len(rows), batch_size), desc="diagnose", unit="batch", disable=not progress):
        sl = slice(start, start + batch_size)
        if partial is not None and all(i in partial.done for i in range(len(rows))[sl]):
            results += [RowDiagnosis(**{k: v for k, v in partial.done[i].items() if k != "index"})
                        for i in range(len(rows))[sl]]
            continue
        ids, mask = left_pad(prompts[sl], rec.pad_token_id)
        batch = diagnose_batch(rec.model, ids, mask, rec.trie, positives[sl], [r.target for r in rows[sl]],
                               num_beams, score_mode=rec.score_mode, max_expansions=max_expansions,
                               beam_lists=beam_lists[sl] if beam_lists is not None else None,
                               exact_hits=exact_hits[sl] if exact_hits is not None else None)
        if partial is not None:
            partial.append([{"index": start + j, **asdict(r)} for j, r in enumerate(batch)])
        results += batch
    summary = summarize(results, num_beams)
    summary.update(split=split, score_mode=rec.score_mode, lists_from=lists_from)
    summary.update(limit=limit)
    write_json(output, {**summary, "rows": [asdict(r) for r in results]})
    if partial is not None:
        partial.remove()
    return summary
