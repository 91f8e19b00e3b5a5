"""`bearrec experiment CONFIG.yaml`: a whole comparison from one file: datasets x methods x seeds, each method's grid
tuned on the validation split, the test split decoded once, diagnosed, reported.

OUTPUT (the config's `output`, or --output) holds:
  experiment.json                  the resolved config of the latest invocation
  data/<dataset>/                  the datasets the config prepares (with prepare.json: the options they were made with,
                                   and semantic_ids.json where the dataset has `index` options, for
                                   `item_kind: semantic_id`; a dataset given by `path` gets its semantic_ids.json in that folder)
  runs/<dataset>/<method>[-<cell>]-seed<seed>/   ordinary run directories: every other command works on them. A grid
                                   cell at the tuning seed is a tuning run and, when selected, also the final run.
  tuning/<dataset>/<method>.json   every cell's validation score and the cell selected (the test split is not read)
  report/<dataset>/                report.html, report.md, summary.json (bearrec.report)
  results.md, results.json         the results of every dataset, one section each
  stages.json                      what became of each stage in the latest invocation (status, seconds, limit, note)
  logs/                            with a `schedule`: each stage's output
Every stage is skipped once its output exists, and trainings resume from their last checkpoint, so an interrupted
experiment continues where it stopped when run again.

Modules: config (the schema, read from YAML and checked), work (what each stage does, where its files go, and the
plan: the stages in order), load (reading a config and building every run's settings before anything runs), stage
(one step), progress (the progress lines, stages.json), runner (running the stages under the output folder's lock;
isolated and child: each in a process of its own, as the config's `schedule` asks), demo (`bearrec demo`'s config).
"""
from __future__ import annotations

from ..baselines import BASELINES
from .config import (FINAL_PHASES, INDEX_OPTIONS, KINDS, RUN_KEYS, RUN_KEYS_FIX, SEARCHES, DatasetSpec, Decoding,
                     Diagnosis, ExperimentConfig, MethodSpec, ReportSpec, Schedule, Tuning, cell_name, parse_experiment)
from .demo import DEMO_CONFIG, DEMO_QUICK, demo_config_path
from .load import check_settings, experiment_from_dict, load_experiment
from .stage import Stage
from .progress import Progress
from .runner import CURRENT_STAGE, run_experiment
from .work import Experiment

__all__ = ["BASELINES", "CURRENT_STAGE", "DEMO_CONFIG", "DEMO_QUICK", "FINAL_PHASES", "INDEX_OPTIONS", "KINDS", "RUN_KEYS",
           "RUN_KEYS_FIX", "SEARCHES", "DatasetSpec", "Decoding", "Diagnosis", "Experiment", "ExperimentConfig",
           "MethodSpec", "Progress", "ReportSpec", "Schedule", "Stage", "Tuning", "cell_name", "check_settings",
           "demo_config_path", "experiment_from_dict", "load_experiment", "parse_experiment", "run_experiment"]
