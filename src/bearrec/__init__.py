"""bearrec: beam-search-aware LLM recommendation."""
from __future__ import annotations

import importlib

from .errors import BearrecError, ConfigError, DataError

__version__ = "0.1.0"

# The public API: name -> the module that defines it. Imported on first use (PEP 562), so that `import bearrec`
# and `bearrec --help` do not pay for torch and transformers. Training and evaluation are the subpackages'
# functions of the same names: `from bearrec.train import train`, `from bearrec.evaluate import evaluate`.
_LAZY: dict[str, str] = {
    "ItemTrie": "bearrec.trie",
    "beam_search": "bearrec.decoding",
    "exact_top_k": "bearrec.decoding",
    "Recommender": "bearrec.recommend",
    "prepare": "bearrec.data",
    "load_dataset": "bearrec.data",
    "load_config": "bearrec.train",
    "TrainConfig": "bearrec.train",
    "ObjectiveConfig": "bearrec.train",
    "write_report": "bearrec.report",
    "diagnose_run": "bearrec.diagnose",
    "load_experiment": "bearrec.experiment",
    "run_experiment": "bearrec.experiment",
}

__all__ = [*_LAZY, "BearrecError", "ConfigError", "DataError", "__version__"]


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bearrec' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups find it directly
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
