"""Devices named by a user (`--device`, a SASRec `device` setting): checked before any work, so that a misspelt
or absent device is a ConfigError naming the option, not torch's assertion after minutes of loading."""
from __future__ import annotations

import torch

from .errors import ConfigError


def check_device(device: str | torch.device, where: str = "--device") -> torch.device:
    """`device` as a torch.device that this machine has; ConfigError naming `where` and the fix otherwise."""
    try:
        found = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"{where} {device!r} is not a device name. Fix: use cpu, cuda, cuda:1 or mps (or leave it "
                          "unset: a GPU when there is one).") from None
    if found.type == "cuda":
        build = "a CPU build of torch" if torch.version.cuda is None else f"torch with CUDA {torch.version.cuda}"
        if not torch.cuda.is_available():
            raise ConfigError(f"{where} {device!r}: this machine has no usable CUDA GPU ({build}). Fix: use cpu, or "
                              "leave it unset.")
        if found.index is not None and found.index >= torch.cuda.device_count():
            raise ConfigError(f"{where} {device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                              f"numbered from 0. Fix: use cuda:0 to cuda:{torch.cuda.device_count() - 1}.")
    elif found.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{where} {device!r}: MPS is not available on this machine. Fix: use cpu.")
    elif found.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"{where} {device!r}: bearrec runs on cpu, cuda or mps. Fix: use one of them.")
    return found
