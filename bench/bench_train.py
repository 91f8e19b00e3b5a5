"""Training-step cost of MSL, BEAR (on MSL, on SFT, with the single-child CE), direct, APAO (both forms) and IGD
relative to SFT, on the same model and the same batches.

    python bench/bench_train.py                # tiny model + a 49,152-vocabulary Llama, CPU, < 4 min
    python bench/bench_train.py --smollm2      # the real SmolLM2-135M instead of the random 49k model
    python bench/bench_train.py --smollm2 --model FOLDER --kinds 49k --objectives sft bear --dtype bfloat16 \
        --batch-size 32 --json train.json   # on a GPU: SmolLM2 saved in FOLDER, bf16 autocast (as Trainer's bf16)

Step time: forward + loss + backward + AdamW step, median over --steps timed steps after --warmup
steps; the objectives are interleaved step by step so that load from other jobs hits them alike.
Tokens/s: the batch's non-padding tokens (prompt + response) over the median step time.
--dtype bfloat16 runs forward and loss under torch.autocast(bfloat16) on float32 weights, as
transformers.Trainer does with bf16=True.
Peak memory: on CUDA, torch.cuda.max_memory_allocated over one step (exact). On CPU (Linux), a separate
process per (model, objective) resets its peak RSS (/proc/self/clear_refs = 5), runs the first step and
reports VmHWM minus the RSS before it (activations, logits, gradients, AdamW state): the allocator's
caching makes this coarse (MB-level), so it is measured on the 49k model only; tracemalloc does not see
torch's allocations and ru_maxrss cannot be reset (model construction already set it higher).
The 49k model by default uses the tiny BPE tokenizer (ids < 2,048) with a 49,152-wide output layer:
the full-vocabulary softmax of SFT and the gather of trie children cost what they would with a real
49k tokenizer; only the titles' token counts differ.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bearrec.methods import is_baseline, report_order

# the methods timed by default (any method of the registry may be named with --objectives)
OBJECTIVES = ("sft", "msl", "msl+ce", "bear", "bear-sft", "direct", "apao", "apao-pairwise", "igd")
KINDS = ("tiny", "49k")


def build(kind: str, root: Path, smollm2: bool):
    """(model, tokenizer, trie, batch) for 'tiny' or '49k' on a synthetic catalog of shared-prefix titles."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from bearrec import models
    from bearrec.data.dataset import Dataset, Interaction
    from bearrec.prompts import ItemTexts, get_template, item_texts
    from bearrec.train import TrainCollator, encode_rows
    from bearrec.trie import ItemTrie

    rng = random.Random(0)
    words = ("red blue green black paper pen pencil marker stapler desk lamp chair note book ink tape folder "
             "binder clip label envelope eraser ruler scissors glue").split()
    items = {str(i): " ".join(rng.sample(words, rng.randint(2, 5))).title() for i in range(2000)}
    ids = list(items)
    rows = [Interaction(f"u{k}", tuple(rng.sample(ids, 10)), rng.choice(ids), k) for k in range(64)]
    ds = Dataset(items, {"train": rows, "valid": rows[:4], "test": rows[:4]})
    template = get_template("alpaca", domain="office")
    folder = models.build_tiny_model(models.tiny_model_texts(ds, item_texts(ds, template)), root / "tiny", seed=0)
    tok = models.load_tokenizer(folder)
    if kind == "tiny":
        model = models.load_model(folder, dtype="float32")
    elif smollm2:
        tok = models.load_tokenizer(ARGS.model)
        model = models.load_model(ARGS.model, dtype="float32")
    else:  # SmolLM2-135M's shapes (fewer layers by default) with its 49,152-entry vocabulary
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(
            vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=ARGS.layers,
            num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True,
            max_position_embeddings=2048, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id))
    trie = ItemTrie.from_catalog(items, tok, template)
    encoded = encode_rows(rows[:ARGS.batch_size], ItemTexts.titles(items, template), tok)
    batch = TrainCollator(tok.pad_token_id, trie, with_prompts=True)(encoded)
    return model, trie, batch


def make_step(model, trie, batch, name: str):
    """A closure running one full optimizer step of objective `name` on `batch`."""
    from bearrec.decoding import beam_thresholds
    from bearrec.methods import get_objective
    from bearrec.train import ObjectiveConfig, objective_loss
    from bearrec.train.batches import IGNORE
    from bearrec.train.negatives import score_negatives

    objective = ObjectiveConfig.for_method(name, num_beams=10)
    sampled = get_objective(objective.name).needs_negatives
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    steps = int((batch["labels"] != IGNORE).sum(1).max())
    device = batch["input_ids"].device
    dtype = getattr(ARGS, "dtype", "float32")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")

    def step() -> None:
        thresholds = None
        with autocast:
            if name == "direct":
                model.eval()
                with torch.no_grad():
                    thresholds = beam_thresholds(model, batch["prompt_ids"], batch["prompt_mask"], trie, 10,
                                                 score_mode=objective.score_mode, max_steps=steps)
                model.train()
            outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            **({"use_cache": True} if sampled else {}))
            negatives = None
            if sampled:  # apao-pairwise: K catalog items scored after each prompt, as the trainer does
                negatives = score_negatives(model, outputs, batch["attention_mask"], batch["labels"],
                                            batch["trie_nodes"], trie, objective.settings().num_negatives,
                                            torch.Generator().manual_seed(0))
            total, count = objective_loss(outputs.logits, batch["labels"], batch["trie_nodes"], trie, objective,
                                          thresholds, negatives)
        (total / count).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def measure_memory(kind: str, name: str) -> float:
    """Peak memory (MB) of one training step of `name`, in a fresh process on CPU (see the module docstring)."""
    if next(MODELS[kind][0].parameters()).is_cuda:
        model, trie, batch = MODELS[kind]
        step = make_step(model, trie, batch, name)
        step()  # optimizer state allocated
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    args = [sys.executable, __file__, "--_memory", kind, name, "--layers", str(ARGS.layers),
            "--batch-size", str(ARGS.batch_size), "--dtype", ARGS.dtype, "--model", ARGS.model,
            "--device", "cpu"] + (["--smollm2"] if ARGS.smollm2 else [])
    out = subprocess.run(args, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return float(out.stdout.strip().splitlines()[-1])


def memory_child(kind: str, name: str) -> None:
    """Child process: peak RSS growth over the first step (activations, logits, gradients, AdamW state)."""
    with tempfile.TemporaryDirectory() as tmp:
        model, trie, batch = build(kind, Path(tmp), ARGS.smollm2)
        step = make_step(model, trie, batch, name)
        Path("/proc/self/clear_refs").write_text("5")  # Linux: reset the peak RSS (VmHWM) to the current RSS
        before = _status_kb("VmRSS")
        step()
        print((_status_kb("VmHWM") - before) / 1024)


def _status_kb(field: str) -> int:
    """A memory field of /proc/self/status, in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def main() -> None:
    global MODELS
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    device = ARGS.device or ("cuda" if torch.cuda.is_available() else "cpu")
    objectives = tuple(ARGS.objectives)
    if "sft" not in objectives:
        objectives = ("sft",) + objectives  # the baseline of the "x SFT" columns
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        MODELS = {}
        for kind in ARGS.kinds:
            model, trie, batch = build(kind, Path(tmp) / kind, ARGS.smollm2)
            model.to(device).train()
            trie = trie.to(device)
            batch = {k: v.to(device) for k, v in batch.items()}
            MODELS[kind] = (model, trie, batch)
            steps = {name: make_step(model, trie, batch, name) for name in objectives}
            times: dict[str, list[float]] = {name: [] for name in objectives}
            for i in range(ARGS.warmup + ARGS.steps):
                for name in objectives:
                    if name == "direct" and i >= ARGS.warmup + ARGS.direct_steps:
                        continue
                    if device.startswith("cuda"):
                        torch.cuda.synchronize()
                    start = time.perf_counter()
                    steps[name]()
                    if device.startswith("cuda"):
                        torch.cuda.synchronize()
                    if i >= ARGS.warmup:
                        times[name].append(time.perf_counter() - start)
            # memory on the 49k model only: on the tiny one the differences are below the RSS noise
            measure = ARGS.memory and (kind == "49k" or device.startswith("cuda"))
            memory = {name: measure_memory(kind, name) for name in objectives} if measure else {}
            base = statistics.median(times["sft"])
            n_params = sum(p.numel() for p in model.parameters())
            tokens = int(batch["attention_mask"].sum())
            for name in objectives:
                t = statistics.median(times[name])
                rows.append({"model": kind, "params_M": round(n_params / 1e6, 1),
                             "vocab": model.config.vocab_size, "objective": name, "steps": len(times[name]),
                             "device": device, "dtype": ARGS.dtype, "batch_rows": int(batch["input_ids"].shape[0]),
                             "batch_tokens": tokens, "tokens_per_s": round(tokens / t, 1),
                             "step_ms": round(1000 * t, 1), "x_sft": round(t / base, 3),
                             "min_x_sft": round(min(times[name]) / min(times["sft"]), 3),
                             "peak_MB": round(memory[name], 1) if memory else None})
    name = f" ({torch.cuda.get_device_name(torch.device(device))})" if device.startswith("cuda") else ""
    print(f"device={device}{name} dtype={ARGS.dtype} batch={ARGS.batch_size} rows, B=10, "
          f"torch threads={torch.get_num_threads()}, torch {torch.__version__}")
    print(f"{'model':6} {'params':>7} {'vocab':>6} {'method':9} {'steps':>5} {'step ms':>9} {'tokens/s':>9} "
          f"{'x SFT':>7} {'min x':>6} {'peak MB':>8}")
    for r in rows:
        peak = "-" if r["peak_MB"] is None else f"{r['peak_MB']:.1f}"
        print(f"{r['model']:6} {r['params_M']:>6}M {r['vocab']:>6} {r['objective']:9} {r['steps']:>5} "
              f"{r['step_ms']:>9.1f} {r['tokens_per_s']:>9.0f} {r['x_sft']:>7.3f} {r['min_x_sft']:>6.3f} {peak:>8}")
    if ARGS.json:
        Path(ARGS.json).write_text(json.dumps(rows, indent=2) + "\n")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=6, help="timed steps per objective (median reported)")
    p.add_argument("--direct-steps", type=int, default=2, help="timed steps for the (slow) direct objective")
    p.add_argument("--layers", type=int, default=2, help="layers of the random 49k model (SmolLM2-135M: 30)")
    p.add_argument("--smollm2", action="store_true", help="use the real SmolLM2-135M (bearrec.models)")
    p.add_argument("--model", default="smollm2-135m", help="with --smollm2: where SmolLM2 is read from (its bearrec "
                   "alias, default, or a folder it was saved to)")
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="models measured (default both)")
    methods = [m for m in report_order() if not is_baseline(m)]
    p.add_argument("--objectives", nargs="+", choices=methods, default=list(OBJECTIVES),
                   help="methods measured (sft is always added: the baseline)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="bfloat16: autocast forward and loss on float32 weights (Trainer's bf16=True)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--no-memory", dest="memory", action="store_false")
    p.add_argument("--json", help="also write the rows here")
    p.add_argument("--_memory", nargs=2, help=argparse.SUPPRESS)
    return p.parse_args()


if __name__ == "__main__":
    ARGS = parse_args()
    if ARGS._memory:
        memory_child(*ARGS._memory)
    else:
        main()
