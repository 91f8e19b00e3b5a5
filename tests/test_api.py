"""The public API (`bearrec.X`, imported lazily) and the range checks of the command line's numeric arguments."""
import subprocess
import sys

import pytest

import bearrec
from bearrec.cli import build_parser

PUBLIC = {
    "ItemTrie": ("bearrec.trie", "ItemTrie"),
    "beam_search": ("bearrec.decoding.beam_search", "beam_search"),
    "exact_top_k": ("bearrec.decoding.exact", "exact_top_k"),
    "Recommender": ("bearrec.recommend", "Recommender"),
    "prepare": ("bearrec.data.prepare", "prepare"),
    "load_dataset": ("bearrec.data.dataset", "load_dataset"),
    "load_config": ("bearrec.train.config", "load_config"),
    "TrainConfig": ("bearrec.train.config", "TrainConfig"),
    "ObjectiveConfig": ("bearrec.train.config", "ObjectiveConfig"),
    "write_report": ("bearrec.report", "write_report"),
    "diagnose_run": ("bearrec.diagnose", "diagnose_run"),
    "load_experiment": ("bearrec.experiment", "load_experiment"),
    "run_experiment": ("bearrec.experiment", "run_experiment"),
    "BearrecError": ("bearrec.errors", "BearrecError"),
    "DataError": ("bearrec.errors", "DataError"),
    "ConfigError": ("bearrec.errors", "ConfigError"),
}


def _fresh_python(code: str) -> str:
    """Run `code` in a new interpreter (nothing imported yet) and return its stdout."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_all_is_the_deliberate_public_api_and_dir_lists_it():
    assert set(bearrec.__all__) == {*PUBLIC, "__version__"}
    assert len(bearrec.__all__) == len(set(bearrec.__all__))
    assert set(bearrec.__all__) <= set(dir(bearrec))
    assert isinstance(bearrec.__version__, str)


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_each_public_name_is_the_object_its_module_defines(name):
    import importlib

    module, attribute = PUBLIC[name]
    assert getattr(bearrec, name) is getattr(importlib.import_module(module), attribute)
    namespace: dict = {}
    exec(f"from bearrec import {name}", namespace)
    assert namespace[name] is getattr(bearrec, name)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="module 'bearrec' has no attribute 'nope'"):
        bearrec.nope  # noqa: B018
    assert not hasattr(bearrec, "load_trained")


def test_import_bearrec_loads_neither_torch_nor_transformers():
    out = _fresh_python("import sys, bearrec, bearrec.cli; bearrec.cli.build_parser(); "
                        "print(sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))")
    assert out.strip() == "[]"


def test_train_and_evaluate_are_their_subpackages():
    """The package's train/evaluate are the submodules; their functions are imported from them."""
    out = _fresh_python("import bearrec\n"
                        "from bearrec.evaluate import evaluate\n"
                        "from bearrec.train import TrainConfig, train\n"
                        "assert callable(evaluate) and callable(train) and 'train' not in bearrec.__all__\n"
                        "assert bearrec.TrainConfig is TrainConfig\n"
                        "print('ok')")
    assert out.strip() == "ok"


@pytest.mark.parametrize("argv, message", [
    (["recommend", "r", "--beams", "0"], "argument --num-beams/--beams: must be an integer >= 1, got 0"),
    (["recommend", "r", "--batch-size", "0"], "argument --batch-size: must be an integer >= 1, got 0"),
    (["recommend", "r", "--search", "greedy"], "argument --search: invalid choice: 'greedy'"),
    (["evaluate", "r", "--search", "exact", "--max-expansions", "0"],
     "argument --max-expansions: must be an integer >= 1, got 0"),
    (["diagnose", "r", "--batch-size", "-2"], "argument --batch-size: must be an integer >= 1, got -2"),
    (["recommend", "r", "--beams", "x"], "argument --num-beams/--beams: must be an integer >= 1, got 'x'"),
    (["recommend", "r", "--limit", "-1"], "argument --limit: must be an integer >= 1, got -1"),
    (["recommend", "r", "--limit", "0"], "argument --limit: must be an integer >= 1, got 0"),
    (["evaluate", "r", "--beams", "0"], "argument --num-beams/--beams: must be an integer >= 1, got 0"),
    (["evaluate", "r", "--limit", "0"], "argument --limit: must be an integer >= 1, got 0"),
    (["diagnose", "r", "--beams", "-3"], "argument --num-beams/--beams: must be an integer >= 1, got -3"),
    (["diagnose", "r", "--limit", "0"], "argument --limit: must be an integer >= 1, got 0"),
    (["diagnose", "r", "--max-expansions", "0"], "argument --max-expansions: must be an integer >= 1, got 0"),
    (["diagnose", "r", "--max-expansions", "1.5"], "argument --max-expansions: must be an integer >= 1, got '1.5'"),
    (["report", "r", "--output", "o", "--bootstrap-metric", "ndgc@10"],
     "argument --bootstrap-metric: must be a per-row metric (hr@K, ndcg@K, mrr@K with K >= 1, e.g. ndcg@10), "
     "got 'ndgc@10'"),
    (["report", "r", "--output", "o", "--bootstrap-metric", "hr@0"], "argument --bootstrap-metric: must be a per-row"),
    (["report", "r", "--output", "o", "--bootstrap-metric", "coverage@10"],
     "argument --bootstrap-metric: must be a per-row"),
])
def test_numeric_arguments_are_range_checked_under_their_own_names(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_valid_arguments_parse_to_their_values():
    parser = build_parser()
    args = parser.parse_args(["diagnose", "r", "--num-beams", "1", "--limit", "5", "--max-expansions", "10"])
    assert (args.num_beams, args.limit, args.max_expansions) == (1, 5, 10)
    assert parser.parse_args(["recommend", "r"]).limit is None
    assert parser.parse_args(["report", "r", "--output", "o"]).bootstrap_metric == "ndcg@10"
    args = parser.parse_args(["report", "r", "--output", "o", "--bootstrap-metric", "MRR@5"])
    assert args.bootstrap_metric == "mrr@5"
