"""Benchmark: our constrained beam search vs HF generate + a Python dict-trie prefix_allowed_tokens_fn.

The default setting is what a user runs: the Office dataset (prepared from the shared BEAR CSVs),
bearrec's tiny model (its BPE tokenizer trained on Office; random weights unless --run gives a trained
run), alpaca prompts of test rows, the whole catalog's trie, and batches of prompts sorted by length as
`Recommender.recommend_rows` cuts them. `--model smollm2-135m` swaps in SmolLM2-135M; `--random` is the
synthetic mode (random Llama of hidden size 32, random prompts and items).

For each beam size: prompts per second of both methods (same model, prompts, batches and catalog;
checked to return the same items) and two floors, timed directly with as many forwards as our search
made per batch: "floor" is our layout's model cost alone (one prompt forward, then per step one forward
of B tokens per prompt on a single cache row per prompt, under a 4-D mask); "beamfl" is a generate-style
loop's model cost alone (one prompt forward, then per step a one-token forward of all P*B beams, each
with its own copy of the prompt cache; no constraints, no reordering). Methods are interleaved within
each repeat (the machine is shared); the table gives the fastest repeat of each and ratios of those
(the least disturbed runs); every repeat's seconds are printed below the table.

  python bench/bench_decoding.py                          # tiny model on Office, B = 10 20 50
  python bench/bench_decoding.py --model smollm2-135m --prompts 8 --batch-size 8 --beams 10 20 --repeats 2
  python bench/bench_decoding.py --run runs/tiny-bear     # a trained run dir
  python bench/bench_decoding.py --random                 # the synthetic setting
  python bench/bench_decoding.py --model FOLDER --device cuda --beams 10 50 --json out.json   # on a GPU
  python bench/bench_decoding.py --no-hf --baseline HEAD~1    # ours beside beam_search.py of another git revision

`--baseline REV` also times `beam_search` as src/bearrec/decoding/beam_search.py was at git revision REV (same
model, prompts and batches, interleaved with the others) and prints its prompts/s, ours/baseline and whether both
return the same items in the same order.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from bearrec.decoding import beam_search, left_pad
from bearrec.decoding.common import cache_kwarg, extend, output_cache, prefill
from bearrec.trie import ItemTrie

OFFICE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "amazon" / "Office"


@dataclass
class Setting:
    """Everything both decoders need: model, special ids, catalog sequences and trie, prompt batches."""

    name: str
    model: Any
    eos: int
    pad: int
    sequences: list[list[int]]
    trie: ItemTrie
    batches: list[tuple[torch.Tensor, torch.Tensor]]

    @property
    def num_prompts(self) -> int:
        return sum(ids.shape[0] for ids, _ in self.batches)


def make_batches(prompts: list[list[int]], batch_size: int, pad: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Left-padded batches of prompts sorted by length (as the recommender cuts them)."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    return [left_pad([prompts[i] for i in order[s:s + batch_size]], pad)
            for s in range(0, len(order), batch_size)]


def office_setting(args: argparse.Namespace, workdir: Path) -> Setting:
    """The tiny model (or --model / --run) on the Office catalog with alpaca prompts of test rows."""
    import random

    from bearrec.data import prepare
    from bearrec.models import build_tiny_model, load_model, load_tokenizer, tiny_model_texts
    from bearrec.prompts import get_template, item_texts

    if args.run:
        from bearrec.recommend import Recommender

        rec = Recommender.from_run(args.run, device="cpu")
        model, tok, texts, dataset, name = rec.model, rec.tokenizer, rec.texts, rec.dataset, f"run {args.run}"
    else:
        dataset = prepare("bear-csv", args.data, workdir / "office")
        template = get_template("alpaca", domain="office")
        if args.model:
            name, path = args.model, args.model
        else:
            name, path = "tiny (random weights)", build_tiny_model(tiny_model_texts(dataset, item_texts(dataset, template)), workdir / "tiny")
        tok, model = load_tokenizer(path), load_model(path, dtype="float32")
        texts = item_texts(dataset, template)
    model = model.float().eval()
    ids = list(dataset.items)
    seqs = texts.response_ids(tok, ids)  # titles, or a semantic-ID run's codes
    trie = ItemTrie.from_sequences(seqs, ids)
    rows = random.Random(args.seed).sample(dataset.test, args.prompts)
    prompts = [texts.prompt_ids(tok, r.history) for r in rows]
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    lens = sorted(len(p) for p in prompts)
    name += f" | {Path(dataset.path).name if dataset.path else 'catalog'}: {len(ids)} items, depth {trie.max_depth}, prompts {lens[0]}-{lens[-1]} tokens " \
            f"(median {lens[len(lens) // 2]})"
    return Setting(name, model, tok.eos_token_id, pad, seqs, trie, make_batches(prompts, args.batch_size, pad))


def random_setting(args: argparse.Namespace) -> Setting:
    """The synthetic setting: random Llama (hidden 32), random prompts and random item sequences."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the decoding tests' fixtures
    from decoding_fixtures import random_prompts, random_sequences, tiny_llama

    model, eos, pad = tiny_llama(args.vocab), 2, 0
    seqs = random_sequences(args.items, args.vocab, eos=eos, max_len=args.title_len, seed=1)
    ids, mask = random_prompts(args.prompts, args.vocab, min_len=args.prompt_len // 2, max_len=args.prompt_len,
                               pad=pad, seed=1)
    prompts = [row[m.bool()].tolist() for row, m in zip(ids, mask)]
    name = f"random tiny Llama (hidden 32) | {args.items} random items, prompts <= {args.prompt_len} tokens"
    return Setting(name, model, eos, pad, seqs, ItemTrie.from_sequences(seqs), make_batches(prompts, args.batch_size, pad))


def dict_trie(seqs: list[list[int]]) -> dict[tuple, list[int]]:
    """The dict trie existing implementations use: generated prefix tuple -> allowed next tokens."""
    nxt: dict[tuple, set] = {}
    for s in seqs:
        for j in range(len(s)):
            nxt.setdefault(tuple(s[:j]), set()).add(s[j])
    return {k: sorted(v) for k, v in nxt.items()}


def hf_generate(st: Setting, table: dict[tuple, list[int]], B: int) -> list[list[tuple]]:
    """HF beam search (num_beams=B, all B returned) constrained by a per-beam prefix_allowed_tokens_fn."""
    res: list[list[tuple]] = []
    for ids, mask in st.batches:
        width = ids.shape[1]

        def allowed(batch_id: int, sent: torch.Tensor) -> list[int]:
            return table.get(tuple(sent[width:].tolist()), [st.eos])

        out = st.model.generate(ids, attention_mask=mask, num_beams=B, num_return_sequences=B, do_sample=False,
                                prefix_allowed_tokens_fn=allowed, max_new_tokens=st.trie.max_depth,
                                early_stopping=False, length_penalty=0.0, pad_token_id=st.pad,
                                eos_token_id=st.eos, return_dict_in_generate=True, output_scores=True)
        gen, ok = out.sequences[:, width:].tolist(), (out.sequences_scores > -1e8).tolist()
        for p in range(ids.shape[0]):
            rows = range(p * B, (p + 1) * B)
            res.append([tuple(gen[r][: gen[r].index(st.eos) + 1]) for r in rows if ok[r] and st.eos in gen[r]])
    return res


def ours(st: Setting, B: int) -> list[list[tuple]]:
    """bearrec's beam search, batch by batch; the token sequences returned per prompt."""
    res: list[list[tuple]] = []
    for ids, mask in st.batches:
        res += [[tuple(h.tokens) for h in row] for row in beam_search(st.model, ids, mask, st.trie, B)]
    return res


def load_revision(rev: str) -> Callable[..., Any]:
    """`beam_search` of src/bearrec/decoding/beam_search.py as it was at git revision `rev` (imported beside today's,
    its relative imports resolved in bearrec.decoding), for a side-by-side timing in one run."""
    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(["git", "show", f"{rev}:src/bearrec/decoding/beam_search.py"], cwd=root, check=True,
                            capture_output=True, text=True).stdout
    name = "bearrec.decoding._beam_search_at_" + re.sub(r"\W", "_", rev)
    module = types.ModuleType(name)
    module.__package__ = "bearrec.decoding"
    sys.modules[name] = module
    exec(compile(source, f"{rev}:src/bearrec/decoding/beam_search.py", "exec"), module.__dict__)
    return module.beam_search


def floor(st: Setting, B: int, steps: list[int]) -> None:
    """Our layout's model cost alone: per batch one prompt forward, then `steps[batch]` forwards of B tokens
    per prompt on one growing cache row per prompt (a 4-D mask over prompt + generated columns), no search."""
    for (ids, mask), n in zip(st.batches, steps):
        P = ids.shape[0]
        logits, cache = prefill(st.model, ids, mask)
        tok = logits.argmax(-1)[:, None].expand(P, B)
        plen = mask.long().sum(1)[:, None].expand(P, B)
        full = mask.bool()[:, None, None, :].expand(P, 1, B, -1)
        for t in range(n):
            cols = torch.ones(P, 1, B, B * (t + 1), dtype=torch.bool, device=ids.device)
            out = st.model(input_ids=tok, attention_mask=torch.cat([full, cols], 3), position_ids=plen + t,
                           use_cache=True, **{cache_kwarg(st.model): cache})
            cache = output_cache(out)
            tok = out.logits.argmax(-1)


def per_beam_floor(st: Setting, B: int, steps: list[int]) -> None:
    """A generate-style loop's model cost alone: one prompt forward, then `steps[batch]` cached one-token
    forwards of all P*B beams, each with its own copy of the prompt cache (no reordering, no constraints)."""
    for (ids, mask), n in zip(st.batches, steps):
        logits, cache = prefill(st.model, ids, mask)
        cache.batch_repeat_interleave(B)
        pmask = mask.repeat_interleave(B, 0)
        plen = pmask.long().sum(1)
        tok = logits.argmax(-1).repeat_interleave(B)[:, None]
        for t in range(n):
            logits, cache = extend(st.model, tok, cache, pmask, plen, offset=t)
            tok = logits[:, -1].argmax(-1)[:, None]


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def count_forwards(model: Any) -> list[int]:
    """A counter of the model's forward calls (reset it by assigning counter[0] = 0)."""
    counter = [0]
    model.register_forward_hook(lambda *_: counter.__setitem__(0, counter[0] + 1))
    return counter


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call (on a GPU, until its queued work has finished)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() and torch.cuda.is_initialized() else (lambda: None)
    sync()
    t0 = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - t0, out


def to_device(st: Setting, device: str) -> Setting:
    """The same setting with its model, trie and prompt batches on `device`."""
    if device == "cpu":
        return st
    batches = [(ids.to(device), mask.to(device)) for ids, mask in st.batches]
    return Setting(st.name, st.model.to(device), st.eos, st.pad, st.sequences, st.trie.to(device), batches)


@torch.inference_mode()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder or bearrec alias, e.g. smollm2-135m "
                    "(default: bearrec's tiny model with random weights)")
    ap.add_argument("--run", default=None, help="a `bearrec train` output dir: its trained model, tokenizer, template")
    ap.add_argument("--random", action="store_true", help="synthetic setting instead of Office")
    ap.add_argument("--data", default=str(OFFICE), help="the BEAR CSV folder of Office")
    ap.add_argument("--beams", type=int, nargs="+", default=[10, 20, 50])
    ap.add_argument("--prompts", type=int, default=16, help="test rows decoded (sampled with --seed)")
    ap.add_argument("--batch-size", type=int, default=16, help="prompts per batch (the recommender's batch_size)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-hf", action="store_true", help="skip generate (for profiling ours vs floor)")
    ap.add_argument("--baseline", help="also time beam_search.py of this git revision (e.g. HEAD~1, main)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu", help="where the model runs: cpu (default), cuda, cuda:1, ...")
    ap.add_argument("--json", default=None, help="also write the table's rows (and every repeat's seconds) here")
    ap.add_argument("--items", type=int, default=2000, help="--random: catalog size")
    ap.add_argument("--prompt-len", type=int, default=96, help="--random: max prompt tokens")
    ap.add_argument("--title-len", type=int, default=8, help="--random: max title tokens before EOS")
    ap.add_argument("--vocab", type=int, default=2048, help="--random: vocabulary of the random Llama")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        st = random_setting(args) if args.random else office_setting(args, Path(tmp))
    st = to_device(st, args.device)
    table = dict_trie(st.sequences)
    baseline = load_revision(args.baseline) if args.baseline else None

    def base(B: int) -> list[list[tuple]]:
        assert baseline is not None
        return [[tuple(h.tokens) for h in row] for ids, mask in st.batches for row in baseline(st.model, ids, mask,
                                                                                                st.trie, B)]
    calls = count_forwards(st.model)
    warm = Setting(st.name, st.model, st.eos, st.pad, st.sequences, st.trie,
                   [(ids[:2], mask[:2]) for ids, mask in st.batches[:1]])
    ours(warm, 4), hf_generate(warm, table, 4)
    if baseline is not None:
        baseline(st.model, *warm.batches[0], st.trie, 4)
    print(f"model: {st.name}")
    device = args.device
    if device.startswith("cuda"):
        device += f" ({torch.cuda.get_device_name(torch.device(args.device))})"
    print(f"prompts={st.num_prompts} in {len(st.batches)} batches of <= {args.batch_size}, threads="
          f"{torch.get_num_threads()}, device={device}, torch {torch.__version__}, repeats={args.repeats} "
          f"(interleaved; times and ratios from the fastest repeat of each)")
    print(f"{'B':>4} {'ours p/s':>9} {'HF p/s':>8} {'floor p/s':>9} {'beamfl p/s':>10} {'HF/ours':>8} "
          f"{'ours/floor':>10} {'HF/beamfl':>9} {'same items':>11}")
    log: list[str] = []
    rows: list[dict[str, Any]] = []
    for B in args.beams:
        t: dict[str, list[float]] = {"ours": [], "hf": [], "floor": [], "beamfloor": [], "base": []}
        same = "-"
        steps = []
        for ids, mask in st.batches:  # our forwards per batch (prefill + steps) define the floor's work
            calls[0] = 0
            beam_search(st.model, ids, mask, st.trie, B)
            steps.append(calls[0] - 1)
        runs: list[tuple[str, Callable[[], Any]]] = [("ours", lambda: ours(st, B)), ("floor", lambda: floor(st, B, steps)),
                                                     ("beamfloor", lambda: per_beam_floor(st, B, steps))]
        if not args.no_hf:
            runs.append(("hf", lambda: hf_generate(st, table, B)))
        if baseline is not None:
            runs.append(("base", lambda: base(B)))
        results: dict[str, Any] = {}
        for r in range(args.repeats):
            for name, fn in runs[r % len(runs):] + runs[: r % len(runs)]:  # rotate the order between repeats
                sec, results[name] = timed(fn)
                t[name].append(sec)
        if not args.no_hf:
            same = f"{sum(a == b for a, b in zip(results['ours'], results['hf']))}/{len(results['ours'])}"
        P = st.num_prompts
        best = {k: min(v) if v else float("nan") for k, v in t.items()}
        ratio = lambda a, b: best[a] / best[b]
        log.append(f"B={B} seconds per repeat: " + ", ".join(f"{k} {' '.join(f'{x:.2f}' for x in v)}" for k, v in t.items() if v))
        rows.append({"beams": B, "prompts": P, "same_items": same, "seconds": t,
                     **{f"{k}_prompts_per_s": P / v for k, v in best.items() if v == v}})
        print(f"{B:>4} {P / best['ours']:>9.2f} {P / best['hf']:>8.2f} {P / best['floor']:>9.2f} "
              f"{P / best['beamfloor']:>10.2f} {ratio('hf', 'ours'):>7.2f}x {ratio('ours', 'floor'):>9.2f}x "
              f"{ratio('hf', 'beamfloor'):>8.2f}x {same:>11}", flush=True)
        if baseline is not None:
            agree = sum(a == b for a, b in zip(results["ours"], results["base"]))
            rows[-1]["baseline"] = {"rev": args.baseline, "same_items": f"{agree}/{len(results['ours'])}"}
            print(f"     baseline {args.baseline}: {P / best['base']:.2f} p/s; ours/baseline {best['base'] / best['ours']:.3f}x "
                  f"the speed (median repeat {median(t['base']) / median(t['ours']):.3f}x); same items {agree}/"
                  f"{len(results['ours'])}", flush=True)
    print("\n".join(log))
    if args.json:
        Path(args.json).write_text(json.dumps({"model": st.name, "device": device, "torch": torch.__version__,
                                               "batch_size": args.batch_size, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
