"""`python -m bearrec.experiment.child INDEX LABEL`: stage INDEX (1-based) of the experiment whose config and output
folder are pickled on stdin, run in this process (bearrec.experiment.isolated starts it; its output is the stage's
log). Exit status 0 when it finished, 2 on a BearrecError (its message printed), else Python's own."""
from __future__ import annotations

import pickle
import sys

from ..errors import BearrecError
from .runner import CURRENT_STAGE
from .work import Experiment


def main(argv: list[str]) -> int:
    index, label = int(argv[0]), argv[1]
    config, out = pickle.load(sys.stdin.buffer)
    stage = Experiment(config, out).stages()[index - 1]
    if stage.label != label:  # the runner and this process must build the same plan
        print(f"bearrec: error: stage {index} is {stage.label!r} here, not {label!r}", file=sys.stderr)
        return 1
    CURRENT_STAGE.set((stage.kind, stage.label))
    try:
        stage.run()
    except BearrecError as e:
        print(f"bearrec: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
