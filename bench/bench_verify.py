"""Cost of checking a saved model's files (size + SHA-256, `models.load_trained`) against loading it unchecked.

    python bench/bench_verify.py                  # SmolLM2-135M saved as float32 (about 540 MB), 3 repeats
    python bench/bench_verify.py --model tiny     # the tiny Llama instead (no SmolLM2 needed)

The model is saved once with `save_trained` into a temporary folder; then `load_trained` runs with the check and
with BEARREC_SKIP_VERIFY=1, alternating, after one untimed load that warms the page cache. The table gives the
fastest repeat of each and their ratio; every repeat is printed below it.
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from bearrec import models
from bearrec.files import SKIP_VERIFY_ENV, file_digest


def saved_model(name: str, folder: Path) -> Path:
    """`name` ("smollm2-135m" or "tiny") saved by save_trained under `folder`."""
    if name == "tiny":
        source = models.build_tiny_model(["a b c d e f g"] * 20, folder / "base", vocab_size=300)
    else:
        source = name
    model = models.load_model(source, dtype="float32")
    models.save_trained(model, models.load_tokenizer(source), folder / "model")
    return folder / "model"


def timed_load(path: Path, verify: bool) -> float:
    if verify:
        os.environ.pop(SKIP_VERIFY_ENV, None)
    else:
        os.environ[SKIP_VERIFY_ENV] = "1"
    start = time.perf_counter()
    models.load_trained(path)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", choices=["smollm2-135m", "tiny"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = saved_model(args.model, Path(tmp))
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        timed_load(path, True)  # warm the page cache
        seconds: dict[str, list[float]] = {"checked": [], "unchecked": []}
        hashing = []
        for _ in range(args.repeats):
            seconds["checked"].append(timed_load(path, True))
            seconds["unchecked"].append(timed_load(path, False))
            start = time.perf_counter()
            for p in path.rglob("*"):
                if p.is_file():
                    file_digest(p)
            hashing.append(time.perf_counter() - start)
    best = {k: min(v) for k, v in seconds.items()}
    print(f"model {args.model}: {size / 1e6:.0f} MB in its folder; torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    print(f"{'load':<12}{'best s':>9}")
    for k, v in best.items():
        print(f"{k:<12}{v:>9.3f}")
    print(f"SHA-256 of every file alone: {min(hashing):.3f} s ({size / 1e6 / min(hashing):.0f} MB/s)")
    print(f"ratio checked / unchecked: {best['checked'] / best['unchecked']:.2f}")
    print("repeats:", {k: [round(x, 3) for x in v] for k, v in seconds.items()})


if __name__ == "__main__":
    main()
