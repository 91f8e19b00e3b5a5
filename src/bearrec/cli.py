"""The `bearrec` command line: each subcommand parses its options and calls one library function."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .config_checks import check_repeated_overrides
from .errors import BearrecError, ConfigError
from .machine import busy_note, set_thread_policy


def _prepare(args: argparse.Namespace) -> int:
    from .data import format_stats, prepare  # per command: --help stays light

    names = ("train_file", "test_file", "valid_size", "train_sample", "test_sample", "seed", "k_core", "start", "end",
             "max_history", "min_history", "max_title_length", "meta", "unknown_items", "untitled")
    options = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    dataset = prepare(args.format, args.source, args.output_dir, overwrite=args.overwrite, **options)
    print(f"prepared {args.format} dataset in {args.output_dir}")
    print(format_stats(dataset.stats))
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from .data import fetch  # per command: --help stays light

    path = fetch(args.name)
    print(f"{args.name} is in {path}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from .train import load_config, train  # per command: --help stays light

    config = load_config(args.config, args.overrides)
    run_dir = train(config, resume=args.resume)
    print(f"trained run is in {run_dir}")
    return 0


def _recommend(args: argparse.Namespace) -> int:
    from .recommend import Recommender  # per command: --help stays light
    from .run_dir import RunDir  # per command: --help stays light

    if args.histories and (args.limit is not None or args.split != "test"):
        raise ConfigError("--limit and --split choose rows of a split; --histories gives its own rows. "
                          "Fix: drop --limit/--split, or cut the histories file to the rows you want.")
    if args.histories and not args.output:
        raise ConfigError("--histories needs --output FILE for the recommendations.")
    k, num_beams = _list_length(args)
    beams = num_beams if num_beams != k else None  # None: k beams, as recorded before --k existed
    run = RunDir(args.run_dir).require()
    rec = Recommender.from_run(run.path, device=args.device, on_dataset_change="warn" if args.histories else "error",
                               batch_size=args.batch_size, search=args.search, max_expansions=args.max_expansions,
                               options=_search_options(args))
    rec.check_width(k, num_beams)
    if args.histories:
        output = args.output
        n = rec.recommend_file(args.histories, output, k=k, num_beams=beams)
    else:
        output = args.output or run.artefact("predictions", args.split, args.limit, args.search)
        n = rec.recommend_split(args.split, output, k=k, num_beams=beams, limit=args.limit)
    print(f"wrote {n} recommendation lists to {output}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate  # per command: --help stays light

    k, num_beams = _list_length(args)
    if args.search != "exact" and k != num_beams:
        raise ConfigError(f"evaluate scores {args.search} search's lists of --num-beams items; --k is the list length "
                          "of --search exact. Fix: drop --k, or set --num-beams to the list length you want.")
    metrics = evaluate(args.run_dir_or_predictions, split=args.split, num_beams=num_beams, k=k, output=args.output,
                       limit=args.limit, batch_size=args.batch_size, search=args.search,
                       max_expansions=args.max_expansions, options=_search_options(args))
    print(json.dumps(metrics, indent=2))
    return 0


def _diagnose(args: argparse.Namespace) -> int:
    from .diagnose import diagnose_run  # per command: --help stays light

    result = diagnose_run(args.run_dir, split=args.split, num_beams=args.num_beams, limit=args.limit,
                          max_expansions=args.max_expansions, batch_size=args.batch_size)
    print(json.dumps(result, indent=2))
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import write_report  # per command: --help stays light

    html, md = write_report(args.run_dirs, args.output, bootstrap_metric=args.bootstrap_metric)
    print(f"report: {html}\n        {md}")
    return 0


def _index(args: argparse.Namespace) -> int:
    from .semantic_index import build_index, describe_index  # per command: --help stays light

    record = build_index(args.dataset_dir, levels=args.levels, codes=args.codes, embeddings=args.embeddings,
                         seed=args.seed, max_leaf_share=args.max_leaf_share)
    print(describe_index(record, args.dataset_dir))
    return 0


def _experiment(args: argparse.Namespace) -> int:
    from .experiment import load_experiment, run_experiment  # per command: --help stays light

    run_experiment(load_experiment(args.config, args.overrides), args.output)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .experiment import DEMO_QUICK, demo_config_path, load_experiment, run_experiment  # per command

    run_experiment(load_experiment(demo_config_path(), DEMO_QUICK if args.quick else ()), args.output)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .serve.command import run  # per command: --help stays light

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    from .cli_args import non_negative_int, per_row_metric, positive_int  # per command: --help stays light

    parser = argparse.ArgumentParser(prog="bearrec", description="Beam-search-aware LLM recommendation.")
    parser.add_argument("--version", action="version", version=f"bearrec {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("prepare", help="turn raw data into a prepared dataset directory")
    p.add_argument("format", help="bear-csv, movielens-100k, recbole or amazon")
    p.add_argument("source", help="the source folder or file ('-' for the fetched MovieLens-100K)")
    p.add_argument("output_dir")
    p.add_argument("--train-file", help="bear-csv: train file name (default train.csv)")
    p.add_argument("--test-file", help="bear-csv: test file name (default test.csv)")
    p.add_argument("--valid-size", type=positive_int, help="bear-csv: validation rows carved from the latest train rows "
                   "(default: as many as the test file has)")
    p.add_argument("--unknown-items", choices=["error", "drop"], help="bear-csv: rows naming items missing "
                   "from the catalog (default error)")
    p.add_argument("--train-sample", type=positive_int, help="keep this many training rows (seeded sample, e.g. 10000)")
    p.add_argument("--test-sample", type=positive_int, help="keep this many test rows (seeded with --seed + 1; a "
                   "smaller test set for quick comparisons)")
    p.add_argument("--seed", type=non_negative_int, help="seed of the training-row sample (default 0)")
    p.add_argument("--k-core", type=positive_int, help="raw logs: iterative k-core filter (default 5; MovieLens: none)")
    p.add_argument("--start", help="raw logs: first interaction time kept (unix seconds or ISO date)")
    p.add_argument("--end", help="raw logs: last interaction time kept (unix seconds or ISO date)")
    p.add_argument("--max-history", type=positive_int, help="raw logs: history items per row (default 10)")
    p.add_argument("--min-history", type=positive_int, help="raw logs: fewest history items per row (default 1)")
    p.add_argument("--max-title-length", type=positive_int, help="raw logs: longer titles are unusable (default 200)")
    p.add_argument("--meta", help="raw Amazon logs: the metadata file with titles")
    p.add_argument("--untitled", choices=["keep", "drop"], help="items without a usable title (empty, "
                   "whitespace only, HTML markup; raw logs: also over --max-title-length): keep them under the "
                   "placeholder title 'unknown item <id>' (MovieLens: its movie 'unknown' under that title), or "
                   "drop them with the rows that mention them; counted in stats.json either way (default: keep "
                   "for bear-csv and movielens-100k, drop for recbole and amazon)")
    p.add_argument("--overwrite", action="store_true", help="replace a different prepared dataset already in "
                   "OUTPUT_DIR, or write into a non-empty folder that is not one (other files are left alone)")
    p.set_defaults(func=_prepare)

    p = sub.add_parser("data", help="fetch public datasets into the user's cache")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    f = dsub.add_parser("fetch", help="download a public dataset")
    f.add_argument("name", choices=["movielens-100k"])
    f.set_defaults(func=_fetch)

    p = sub.add_parser("train", help="fine-tune a causal LM with sft, msl, bear or direct")
    p.add_argument("config", help="YAML config (see configs/)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. objective.name=bear training.seed=1")
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    p.set_defaults(func=_train)

    p = sub.add_parser("recommend", help="top-K items for each row of a split or for given histories")
    p.add_argument("run_dir")
    p.add_argument("--split", default="test")
    p.add_argument("--histories", help="a JSON Lines file of {\"history\": [item ids]} to recommend for")
    p.add_argument("--num-beams", "--beams", type=positive_int,
                   help="beam search's width B (default: --k, else 10)")
    p.add_argument("--output")
    p.add_argument("--limit", type=positive_int, help="only the first N rows")
    p.add_argument("--device")
    p.add_argument("--batch-size", type=positive_int, default=16, help="prompts decoded at once (default 16; "
                   "raise it on a GPU)")
    _search_arguments(p)
    p.set_defaults(func=_recommend)

    p = sub.add_parser("serve", help="an HTTP server of a trained run: batched recommendations, a web page, metrics "
                       "(pip install 'bearrec[serve]')")
    from .serve.command import add_arguments as serve_arguments  # light: the options only, no serve extra

    serve_arguments(p)
    p.set_defaults(func=_serve)

    p = sub.add_parser("evaluate", help="HR, NDCG, MRR and more from a predictions file or a run directory")
    p.add_argument("run_dir_or_predictions", metavar="RUN_DIR|PREDICTIONS",
                   help="a run directory, or a predictions .jsonl file")
    p.add_argument("--split", default="test")
    p.add_argument("--num-beams", "--beams", type=positive_int,
                   help="beam search's width B, when a run directory must decode its predictions (default 10)")
    p.add_argument("--limit", type=positive_int, help="only the first N rows")
    p.add_argument("--output", help="metrics.json path (default beside the source)")
    p.add_argument("--batch-size", type=positive_int, default=16,
                   help="prompts decoded at once, when a run directory must decode (default 16; raise it on a GPU)")
    _search_arguments(p)
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("diagnose", help="PruningRate@B and where beam search loses the positive item")
    p.add_argument("run_dir")
    p.add_argument("--split", default="test")
    p.add_argument("--num-beams", "--beams", type=positive_int, default=10, help="beam size B (default 10)")
    p.add_argument("--limit", type=positive_int, help="only the first N rows")
    p.add_argument("--max-expansions", type=positive_int, default=2000,
                   help="model evaluations per row allowed to the exact top-K search (default 2000)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="prompts diagnosed at once (default 8)")
    p.set_defaults(func=_diagnose)

    p = sub.add_parser("report", help="an HTML page and a Markdown twin comparing runs")
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--output", required=True)
    p.add_argument("--bootstrap-metric", type=per_row_metric, default="ndcg@10",
                   help="per-row metric of the paired bootstrap: hr@K, ndcg@K or mrr@K (default ndcg@10)")
    p.set_defaults(func=_report)

    p = sub.add_parser("index", help="semantic IDs: residual k-means codes of every catalog item from its embedding")
    p.add_argument("dataset_dir", help="a prepared dataset (semantic_ids.json is written into it)")
    p.add_argument("--levels", type=positive_int, default=3, help="codes per item before disambiguation (default 3)")
    p.add_argument("--codes", type=positive_int, default=32, help="codes per level, K (default 32)")
    p.add_argument("--embeddings", default="collaborative",
                   help="collaborative (training split only), npy:PATH (one row per item) or lm:MODEL (default "
                        "collaborative)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the k-means (default 0)")
    p.add_argument("--max-leaf-share", type=float, default=0.5,
                   help="refuse codes whose largest leaf (one code sequence before disambiguation) holds more than "
                        "this share of the catalog (default 0.5; 1 accepts any)")
    p.set_defaults(func=_index)

    p = sub.add_parser("experiment", help="a whole comparison from one YAML file: datasets x methods x seeds, "
                       "tuned on validation, evaluated, diagnosed and reported (resumable)")
    p.add_argument("config", help="the experiment's YAML file (configs/experiments/ has examples)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, dotted: seeds=[0] "
                   "methods.bear.grid.objective.lam=[0.1,1.0] train.training.num_train_epochs=1")
    p.add_argument("--output", help="the output folder (default: the config's `output`, else runs/NAME)")
    p.set_defaults(func=_experiment)

    p = sub.add_parser("demo", help="MovieLens-100K, tiny model, SFT vs MSL vs BEAR beside popularity and SASRec, "
                       "end to end (the experiment in bearrec/configs/demo.yaml)")
    p.add_argument("--output", default="demo-output")
    p.add_argument("--quick", action="store_true", help="a much smaller run, for smoke tests")
    p.set_defaults(func=_demo)
    return parser


def _search_arguments(p: argparse.ArgumentParser) -> None:
    """--search and --max-expansions of recommend and evaluate."""
    from .cli_args import positive_int  # per command: --help stays light

    p.add_argument("--k", type=positive_int, help="items per recommendation list (default: --num-beams)")
    from .searches import SEARCHES  # per command: --help stays light

    p.add_argument("--search", choices=SEARCHES, default="beam",
                   help="beam: constrained beam search (default); exact: the k most probable items of the whole "
                        "catalog, each row marked certified when proved exact; diverse: diverse beam search; d3: "
                        "beam search with D3's scores; igd: with IGD's (docs/decoding.md)")
    p.add_argument("--max-expansions", type=positive_int, default=2000,
                   help="exact search: model evaluations per row before it stops uncertified (default 2000)")
    p.add_argument("--groups", type=positive_int, help="diverse: groups of beams (default 2; must divide the beams)")
    p.add_argument("--diversity-penalty", type=float, help="diverse: what a token costs per beam of an earlier group "
                   "that chose it at the same step (default 1.0)")
    p.add_argument("--assistant", metavar="BASELINE_RUN_DIR", help="d3: a fitted baseline run (SASRec) whose item "
                   "scores mix into the LLM's (D3's text-free assistant)")
    p.add_argument("--assistant-weight", type=float, help="d3: the assistant's weight in [0, 1) (tune it on "
                                                          "validation)")
    p.add_argument("--ig-weight", type=float, help="igd: how much a token's information gain lowers its cost, in "
                                                   "[0, 1] (default 0.5; tune it on validation)")


def _search_options(args: argparse.Namespace) -> Any:
    """The SearchOptions of --groups, --diversity-penalty, --assistant, --assistant-weight and --ig-weight, each
    refused under a search it does not apply to."""
    from dataclasses import replace

    from .searches import SearchOptions  # per command: --help stays light

    belongs = {"groups": "diverse", "diversity_penalty": "diverse", "assistant": "d3", "assistant_weight": "d3",
               "ig_weight": "igd"}
    for key, search in belongs.items():
        if getattr(args, key) is not None and args.search != search:
            raise ConfigError(f"--{key.replace('_', '-')} applies to --search {search}, not {args.search}. "
                              f"Fix: add --search {search}, or drop --{key.replace('_', '-')}.")
    if (args.assistant is None) != (args.assistant_weight is None):
        raise ConfigError("--assistant and --assistant-weight go together. Fix: give both (the weight tuned on "
                          "validation, e.g. `bearrec evaluate RUN_DIR --split valid --search d3 --assistant "
                          "SASREC_RUN --assistant-weight 0.1`), or neither.")
    options = SearchOptions(groups=args.groups or 2, diversity_penalty=(
        1.0 if args.diversity_penalty is None else args.diversity_penalty),
        assistant_weight=args.assistant_weight or 0.0, ig_weight=0.5 if args.ig_weight is None else args.ig_weight)
    options.check()
    if args.assistant is not None:
        from .baseline_scorers import load_scorer  # cornac and torch: only when an assistant is asked for

        assistant = load_scorer(args.assistant)
        if assistant.method != "sasrec":
            raise ConfigError(f"--assistant {args.assistant} is a {assistant.method} run; D3's assistant scores items "
                              "by logits, which popularity's counts are not. Fix: give a sasrec baseline run.")
        options = replace(options, assistant=assistant, assistant_name=assistant.label)
    return options


def _list_length(args: argparse.Namespace) -> tuple[int, int]:
    """(k, num_beams): --k is the list length, --num-beams beam search's width; each defaults to the other, else 10.
    Before --k existed, exact search read --num-beams as its list length: that still works, with a note."""
    if args.search == "exact":
        if args.k is None and args.num_beams is not None:
            print("bearrec: note: under --search exact, --num-beams is read as --k, the list length (exact search has "
                  "no beams). Fix: say --k.", file=sys.stderr)
            return args.num_beams, args.num_beams
        return args.k or 10, args.k or 10
    num_beams = args.num_beams or args.k or 10
    return args.k or num_beams, num_beams


def _version() -> str:
    from . import __version__  # per command: --help stays light

    return __version__


def _close_process_group() -> None:
    """Under torchrun, leave the process group before exit: a gloo group left to interpreter teardown can
    abort the process (SIGABRT), and torchrun then kills the other ranks. Only after success, so a failing
    rank does not wait in a collective."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


HEAVY_COMMANDS = ("train", "recommend", "evaluate", "diagnose", "experiment", "demo", "index", "serve")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # overrides may follow an option (`--output DIR seeds=[0]`): argparse leaves those over
        if not hasattr(args, "overrides") or any(a.startswith("-") or "=" not in a for a in extra):
            parser.parse_args(argv)  # the usual usage error naming what is not recognised
        args.overrides = [*args.overrides, *extra]
    if args.command in HEAVY_COMMANDS and (note := busy_note()):
        set_thread_policy()  # before torch loads: OpenMP reads it once
        print(note, file=sys.stderr)
    try:
        check_repeated_overrides(getattr(args, "overrides", ()))  # a key typed twice: only the last would count
        code = int(args.func(args) or 0)
        _close_process_group()
        return code
    except BearrecError as e:
        print(f"bearrec: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bearrec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
