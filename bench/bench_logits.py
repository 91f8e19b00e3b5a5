"""Logits only where the loss reads them: a training step of SFT and BEAR with and without `logits_to_keep`.

    python bench/bench_logits.py                 # random 2-layer Llama, 128,256-entry vocabulary, CPU, ~3 min
    python bench/bench_logits.py --device cuda   # the same on a GPU (peak memory from torch.cuda)
    python bench/bench_logits.py --prefill       # beam search's prefill on SmolLM2-135M, last position vs all

The setting of issue 12: Llama 3's vocabulary (128,256), prompts of about 383 tokens and responses of 33 (the
paper's alpaca prompt on Office), 4 rows a batch, left-padded by TrainCollator. Each step is the real
`BearTrainer.compute_loss` (forward, loss, backward) plus an AdamW step; "all" makes the model compute every
position's logits (`logits_to_keep` switched off), "kept" is bearrec's path (the last `longest response + 1`
positions only). Step time: median of --steps steps, the four variants interleaved. Peak memory: on CUDA,
torch.cuda.max_memory_allocated over one step after a warm-up step; on CPU (Linux), a fresh process per
variant resets its peak RSS (/proc/self/clear_refs = 5) after a warm-up step and reports VmHWM minus the RSS
before the measured step (activations, logits and gradients; the AdamW state exists already).
"""
from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

VOCAB, PROMPT, RESPONSE = 128_256, 383, 33
VARIANTS = [("sft", "all"), ("sft", "kept"), ("bear", "all"), ("bear", "kept")]


def setup(device: str):
    """(trainer per objective, batch): a random small Llama with a 128k vocabulary, a trie of random titles."""
    from transformers import LlamaConfig, LlamaForCausalLM, TrainingArguments

    from bearrec.train import BearTrainer, ObjectiveConfig, TrainCollator
    from bearrec.train.batches import IGNORE
    from bearrec.trie import ItemTrie

    torch.manual_seed(0)
    rng = random.Random(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=256, intermediate_size=512,
                                         num_hidden_layers=ARGS.layers, num_attention_heads=4, num_key_value_heads=4,
                                         max_position_embeddings=1024, tie_word_embeddings=True)).to(device)
    eos = 2
    items = [[rng.randrange(3, VOCAB) for _ in range(RESPONSE - 1)] + [eos] for _ in range(200)]
    trie = ItemTrie.from_sequences(items, [str(i) for i in range(len(items))],
                                   meta={"eos_token_id": eos, "vocab_size": VOCAB})
    rows = []
    for r in range(ARGS.batch_size):
        prompt = [rng.randrange(3, VOCAB) for _ in range(PROMPT - 8 + 4 * r)]  # unequal lengths: real padding
        response = items[r]
        rows.append({"input_ids": prompt + response, "labels": [IGNORE] * len(prompt) + response})
    batch = {k: v.to(device) for k, v in TrainCollator(0, trie)(rows).items()}
    args = TrainingArguments(output_dir=tempfile.mkdtemp(), report_to="none", remove_unused_columns=False,
                             use_cpu=device == "cpu")
    trainers = {name: BearTrainer(model=model, args=args, objective=ObjectiveConfig(name=name, num_beams=10),
                                  trie=trie) for name in ("sft", "bear")}
    return model, trainers, batch


def make_step(model, trainer, batch, mode: str):
    import bearrec.train.trainer as trainer_module
    from bearrec.models import logits_to_keep

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step() -> None:
        trainer_module.logits_to_keep = logits_to_keep if mode == "kept" else (lambda m, n: {})
        try:
            loss = trainer.compute_loss(model, dict(batch))
        finally:
            trainer_module.logits_to_keep = logits_to_keep
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_memory(device: str, name: str, mode: str) -> float:
    """Peak MB of one step of (name, mode) above what the model and optimizer already hold."""
    if device.startswith("cuda"):
        model, trainers, batch = setup(device)
        step = make_step(model, trainers[name], batch, mode)
        step()
        sync(device)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        sync(device)
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    out = subprocess.run([sys.executable, __file__, "--_memory", name, mode, "--layers", str(ARGS.layers),
                          "--batch-size", str(ARGS.batch_size)], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return float(out.stdout.strip().splitlines()[-1])


def _memory_child(name: str, mode: str) -> None:
    model, trainers, batch = setup("cpu")
    step = make_step(model, trainers[name], batch, mode)
    step()
    Path("/proc/self/clear_refs").write_text("5")
    status = lambda key: int(next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines()
                                  if line.startswith(key)))
    before = status("VmRSS:")
    step()
    print((status("VmHWM:") - before) / 1024)


def prefill_main() -> None:
    """Prefill (one forward over left-padded prompts, the last position's logits) on SmolLM2-135M, with
    logits_to_keep=1 against every position's logits, interleaved; 16 prompts of 405 random tokens."""
    import bearrec.models as models_module
    from bearrec import models
    from bearrec.decoding.common import prefill

    device = ARGS.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = models.load_model("smollm2-135m", dtype="float32").to(device).eval()
    torch.manual_seed(0)
    ids = torch.randint(3, model.config.vocab_size, (16, 405), device=device)
    mask = torch.ones_like(ids)
    keep = models_module.logits_to_keep
    times: dict[str, list[float]] = {"last": [], "all": []}
    with torch.no_grad():
        for repeat in range(ARGS.steps + 1):
            for mode in times:
                models_module.logits_to_keep = keep if mode == "last" else (lambda m, n: {})
                sync(device)
                start = time.perf_counter()
                logits, _ = prefill(model, ids, mask)
                sync(device)
                if repeat:  # the first round warms up
                    times[mode].append(time.perf_counter() - start)
        models_module.logits_to_keep = keep
    print(f"SmolLM2-135M prefill, 16 prompts x 405 tokens, device {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    for mode, t in times.items():
        print(f"{mode:<5} logits: median {statistics.median(t):.3f} s  ({', '.join(f'{x:.3f}' for x in t)})")
    print(f"all / last: {statistics.median(times['all']) / statistics.median(times['last']):.2f}x")


def main() -> None:
    device = ARGS.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, trainers, batch = setup(device)
    steps = {(n, m): make_step(model, trainers[n], batch, m) for n, m in VARIANTS}
    times: dict[tuple[str, str], list[float]] = {v: [] for v in VARIANTS}
    for v in VARIANTS:  # warm-up (AdamW state)
        steps[v]()
    for _ in range(ARGS.steps):
        for v in VARIANTS:
            sync(device)
            start = time.perf_counter()
            steps[v]()
            sync(device)
            times[v].append(time.perf_counter() - start)
    memory = {v: peak_memory(device, *v) for v in VARIANTS} if ARGS.memory else {}
    width = batch["input_ids"].shape[1]
    kept = int((batch["labels"] != -100).sum(1).max()) + 1
    print(f"random Llama: {ARGS.layers} layers, hidden 256, vocabulary {VOCAB:,}; batch {ARGS.batch_size} rows, "
          f"{width} columns (prompts {PROMPT - 8}-{PROMPT - 8 + 4 * (ARGS.batch_size - 1)} + {RESPONSE} response "
          f"tokens), logits kept: {kept} of {width} positions; device {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'objective':<10}{'logits':<7}{'step ms':>10}{'peak MB':>10}")
    for v in VARIANTS:
        mem = f"{memory[v]:>10.0f}" if v in memory else f"{'-':>10}"
        print(f"{v[0]:<10}{v[1]:<7}{1000 * statistics.median(times[v]):>10.0f}{mem}")
    for name in ("sft", "bear"):
        t_all, t_kept = statistics.median(times[(name, "all")]), statistics.median(times[(name, "kept")])
        line = f"{name}: step all/kept {t_all / t_kept:.2f}x"
        if memory:
            line += f", peak memory all/kept {memory[(name, 'all')] / memory[(name, 'kept')]:.2f}x"
        print(line)
    print("step seconds:", {f"{n}/{m}": [round(x, 3) for x in t] for (n, m), t in times.items()})


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--device")
    p.add_argument("--no-memory", dest="memory", action="store_false")
    p.add_argument("--prefill", action="store_true", help="time beam search's prefill on SmolLM2-135M instead")
    p.add_argument("--_memory", nargs=2, help=argparse.SUPPRESS)
    ARGS = p.parse_args()
    if ARGS._memory:
        _memory_child(*ARGS._memory)
    elif ARGS.prefill:
        prefill_main()
    else:
        main()
