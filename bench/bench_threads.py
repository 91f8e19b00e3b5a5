"""Two bearrec jobs on one small machine: do they cost about twice one, or far more (OpenMP threads that spin while
they wait for a core another job holds)?

Each job is a subprocess training the demo-sized tiny Llama (hidden 128, 2 layers, vocabulary 2048, batch 16 x 64
tokens) for --steps steps. Side by side in one run, on the same machine:
  alone         one job, --threads threads (alone, passive: with OMP_WAIT_POLICY=passive, its cost to a lone job)
  two, spin     two jobs at once, --threads threads each, OMP_WAIT_POLICY=active (what torch's OpenMP does by default:
                a waiting thread spins)
  two, passive  two jobs at once, --threads threads each, OMP_WAIT_POLICY=passive (what bearrec sets when the user
                has not: a waiting thread sleeps)
  two, 1 thread two jobs at once, one thread each
  spin 10k      GOMP_SPINCOUNT=10000: a waiting thread spins briefly, then sleeps (alone and two at once)
It prints each scenario's seconds per step and the ratio of two jobs' wall time to one job's.

    python bench/bench_threads.py [--steps 60] [--threads 2] [--repeats 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

JOB = r"""
import sys, time, torch
from transformers import LlamaConfig, LlamaForCausalLM
torch.manual_seed(0)
model = LlamaForCausalLM(LlamaConfig(vocab_size=2048, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=4))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
ids = torch.randint(0, 2048, (16, 64))
for step in range(3 + int(sys.argv[1])):
    if step == 3:
        start = time.perf_counter()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad()
print(time.perf_counter() - start)
"""


def run_jobs(n: int, threads: int, policy: str | None, steps: int) -> tuple[float, list[float]]:
    """(wall seconds, each job's seconds for `steps` steps) of `n` jobs started together; `policy` is an
    OMP_WAIT_POLICY, or "spin:N" for GOMP_SPINCOUNT=N (spin that long, then sleep)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env.pop("OMP_WAIT_POLICY", None)
    env.pop("GOMP_SPINCOUNT", None)
    if policy is not None and policy.startswith("spin:"):
        env["GOMP_SPINCOUNT"] = policy.split(":", 1)[1]
    elif policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", JOB, str(steps)], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(n)]
    times = [float(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    return time.perf_counter() - start, times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    scenarios = [("alone", 1, args.threads, None), ("alone, passive", 1, args.threads, "passive"),
                 ("alone, spin 10k", 1, args.threads, "spin:10000"),
                 ("two, spin", 2, args.threads, "active"), ("two, spin 10k", 2, args.threads, "spin:10000"),
                 ("two, passive", 2, args.threads, "passive"), ("two, 1 thread", 2, 1, None)]
    per_step: dict[str, list[float]] = {name: [] for name, *_ in scenarios}
    for _ in range(args.repeats):  # interleaved, so that a slow spell of the machine hits every scenario
        for name, n, threads, policy in scenarios:
            _, times = run_jobs(n, threads, policy, args.steps)
            per_step[name].append(statistics.mean(times) / args.steps)
    alone = statistics.median(per_step["alone"])
    print(f"{os.cpu_count()} cores, {args.steps} steps a job, median of {args.repeats} repeats, "
          f"torch's default thread count {args.threads}")
    print(f"{'scenario':16} {'s/step':>8} {'x alone':>8}   (two jobs doing twice the work: 2.0x alone's wall time is "
          "a fair share; per-step time x alone above 2 means the jobs slow each other beyond sharing)")
    for name, *_ in scenarios:
        s = statistics.median(per_step[name])
        print(f"{name:16} {s:8.4f} {s / alone:8.2f}")


if __name__ == "__main__":
    main()
