"""`bearrec demo`: the experiment config shipped inside the package, and its --quick overrides."""
from __future__ import annotations

from pathlib import Path

DEMO_CONFIG = "demo.yaml"  # shipped in bearrec/configs/

# `bearrec demo --quick`: the demo shrunk to a smoke test (a minute or two on a CPU).
DEMO_QUICK = ("datasets.ml100k.prepare.train_sample=200", "datasets.ml100k.test_sample=40",
              "train.max_valid_rows=40", "train.training.num_train_epochs=1", "diagnosis.rows=20",
              "methods.sasrec.n_epochs=2")


def demo_config_path() -> Path:
    """The experiment config `bearrec demo` runs (shipped inside the package)."""
    from importlib import resources

    return Path(str(resources.files("bearrec") / "configs" / DEMO_CONFIG))
