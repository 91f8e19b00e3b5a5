"""The Trainer's checkpoints under RUN_DIR/checkpoints: which is the last complete one to resume from.

A kill during a checkpoint save leaves a folder without trainer_state.json, or with a truncated optimizer.pt or
weights file. Resuming from it would fail inside torch; it is set aside (moved to RUN_DIR/incomplete-checkpoints/,
out of the Trainer's sight: its rotation would take checkpoint-N.anything for a checkpoint) with a note naming it,
and the run resumes from the one before."""
from __future__ import annotations

import json
import re
import struct
import sys
import zipfile
from pathlib import Path

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")  # transformers' PREFIX_CHECKPOINT_DIR-<step>
INCOMPLETE = "incomplete-checkpoints"  # beside RUN_DIR/checkpoints
_TENSOR_FILES = (".pt", ".pth", ".bin")  # torch.save's zip archives
_WEIGHTS = ("model.safetensors", "adapter_model.safetensors", "pytorch_model.bin", "adapter_model.bin",
            "model.safetensors.index.json", "pytorch_model.bin.index.json")


def _safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file is cut short (its header says where the last tensor ends), or None."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length)) if 8 + length <= size else None
    except (struct.error, ValueError, UnicodeDecodeError):
        header = None
    if not isinstance(header, dict):
        return f"{path.name} has no readable header (truncated)"
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    return None if size >= 8 + length + end else f"{path.name} is truncated ({size} of {8 + length + end} bytes)"


def checkpoint_problem(folder: Path) -> str | None:
    """Why `folder` cannot be resumed from (a save that did not finish), or None when it is complete. A folder that
    vanishes while it is read (another rank moving it aside) cannot be resumed from either."""
    try:
        return _problem(folder)
    except OSError as e:
        return f"it could not be read ({type(e).__name__})"


def _problem(folder: Path) -> str | None:
    state = folder / "trainer_state.json"
    if not state.is_file():
        return "trainer_state.json is missing"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return "trainer_state.json is not valid JSON"
    if not any((folder / name).is_file() for name in _WEIGHTS) and not any(folder.glob("global_step*")):
        return "it holds no model weights"
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        if path.suffix == ".safetensors" and (problem := _safetensors_problem(path)):
            return problem
        if path.suffix in _TENSOR_FILES:
            with open(path, "rb") as f:
                zipped = f.read(2) == b"PK"
            if path.stat().st_size == 0 or zipped and not zipfile.is_zipfile(path):
                return f"{path.relative_to(folder)} is truncated or damaged"
    return None


def last_complete_checkpoint(checkpoints: Path, *, set_aside: bool = True) -> Path | None:
    """The checkpoint with the most steps that is complete; each newer incomplete one is moved aside (by the main
    process only, `set_aside`), with a note on stderr naming it."""
    if not checkpoints.is_dir():
        return None
    found = sorted(((int(m[1]), p) for p in checkpoints.iterdir() if p.is_dir() and (m := CHECKPOINT.match(p.name))),
                   reverse=True)
    for _, folder in found:
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        aside = checkpoints.parent / INCOMPLETE / folder.name
        while aside.exists():
            aside = aside.with_name(aside.name + "-again")
        if set_aside and folder.is_dir():
            aside.parent.mkdir(exist_ok=True)
            folder.rename(aside)
            print(f"bearrec: note: {folder} was not completely saved ({problem}; the job was probably stopped while "
                  f"saving it). It is moved to {aside} and training resumes from the checkpoint before it. Fix: "
                  "delete that folder once the run is done.", file=sys.stderr)
    return None
