"""`bearrec experiment`: a tiny comparison end to end (two methods and a baseline, two seeds, a grid of two cells),
its tables and intervals, that tuning never reads the test split, resuming, and the config's errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bearrec import experiment as exp
from bearrec.baseline_scorers import scorer_label
from bearrec.cli import main
from bearrec.data.dataset import Dataset
from bearrec.errors import ConfigError
from bearrec.metrics import per_row_metrics
from bearrec.files import read_jsonl
from run_fixtures import write_small_dataset

TINY_TRAIN = {
    "model": "tiny", "template": "compact", "max_history": 3,
    "tiny": {"vocab_size": 300, "hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 4},
    "training": {"num_train_epochs": 1, "per_device_train_batch_size": 10, "eval_strategy": "steps", "eval_steps": 1,
                 "save_strategy": "steps", "save_steps": 1, "logging_steps": 1, "disable_tqdm": True},
}


def tiny_experiment(data: Path, **changes) -> dict:
    raw = {"name": "tiny", "datasets": {"small": {"path": str(data)}}, "train": TINY_TRAIN,
           "methods": {"popularity": {}, "sft": {}, "bear": {"grid": {"objective.lam": [0.1, 1.0]}}},
           "seeds": [0, 1], "decoding": {"num_beams": 5, "search": ["beam", "exact"]},
           "diagnosis": {"rows": 3, "max_expansions": 200},
           "tuning": {"metric": "ndcg@5"}, "report": {"bootstrap_metric": "hr@5"}}
    raw.update(changes)
    return raw


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The tiny experiment run once, with every read of the test split recorded with the stage that made it."""
    root = tmp_path_factory.mktemp("experiment")
    write_small_dataset(root / "data")
    reads: list = []
    original_split, original_test = Dataset.split, Dataset.test

    def split(self, name):
        if name == "test":
            reads.append(exp.CURRENT_STAGE.get())
        return original_split(self, name)

    def test(self):
        reads.append(exp.CURRENT_STAGE.get())
        return original_test.fget(self)

    mp = pytest.MonkeyPatch()
    mp.setattr(Dataset, "split", split)
    mp.setattr(Dataset, "test", property(test))
    lines: list[str] = []
    try:
        config = exp.experiment_from_dict(tiny_experiment(root / "data"), "tiny.yaml")
        results = exp.run_experiment(config, root / "out", print_fn=lines.append)
    finally:
        mp.undo()
    return root, config, results, reads, lines


def test_the_tables_and_intervals_cover_every_method_and_seed(finished):
    root, config, results, _, lines = finished
    out = root / "out"
    summary = json.loads((out / "report" / "small" / "summary.json").read_text())
    assert list(summary["methods"]) == ["popularity", "sft", "bear"]
    for method, info in summary["methods"].items():
        assert info["seeds"] == [0, 1], method
        assert info["metrics"]["n_rows"]["mean"] == 5  # the fixture's 5 test rows
    pairs = {b["comparison"] for b in summary["paired_bootstrap"]}
    assert len(pairs) == 3 and all(b["metric"] == "hr@5" for b in summary["paired_bootstrap"])
    # an interval is the paired difference of the two methods' per-row hr@5, averaged over the seeds
    boot = next(b for b in summary["paired_bootstrap"] if set(b["comparison"].split(" - ")) == {"sft", "bear"})
    first, second = boot["comparison"].split(" - ")
    per_seed = {m: [per_row_metrics(list(read_jsonl(exp.Experiment(config, out).run_dir(
        config.datasets[0], next(x for x in config.methods if x.name == m),
        exp.Experiment(config, out).selected(config.datasets[0], next(x for x in config.methods if x.name == m)),
        s) / "predictions.jsonl")), ks=(5,))["hr@5"] for s in (0, 1)] for m in (first, second)}
    diff = sum((a + b) / 2 for a, b in zip(*per_seed[first])) - sum((a + b) / 2 for a, b in zip(*per_seed[second]))
    assert boot["mean_diff"] == pytest.approx(diff / 5)
    assert boot["low"] <= boot["mean_diff"] <= boot["high"]
    text = results.read_text()
    for method in ("popularity", "sft", "bear"):
        assert f"| {method} |" in text
    assert "## small" in text and "Tuning bear" in text
    assert any(line.startswith("[stage 1/") for line in lines) and any("| about " in line for line in lines)
    assert (out / "report" / "small" / "report.html").is_file()
    # both search modes side by side: the exact search's metrics, every row certified
    for method in ("sft", "bear"):
        exact = summary["methods"][method]["metrics_exact"]
        assert exact["certified_share"]["mean"] == 1.0 and exact["n_rows"]["mean"] == 5
    assert summary["methods"]["popularity"]["metrics_exact"] is None
    assert "Exact top-K search" in (out / "report" / "small" / "report.md").read_text()


def test_tuning_picks_the_best_validation_cell_and_never_reads_the_test_split(finished):
    root, config, _, reads, _ = finished
    tuning_kinds = {"tune", "select"}
    assert reads, "the spy saw no read of the test split at all"
    assert not [r for r in reads if r is None or r[0] in tuning_kinds], reads
    record = json.loads((root / "out" / "tuning" / "small" / "bear.json").read_text())
    assert record["split"] == "valid" and [c["settings"] for c in record["cells"]] == [
        {"objective.lam": 0.1}, {"objective.lam": 1.0}]
    for cell in record["cells"]:
        valid = json.loads((Path(cell["run"]) / "metrics-valid.json").read_text())
        assert cell["score"] == valid["ndcg@5"] and valid["split"] == "valid"
        assert not (Path(cell["run"]) / "predictions.jsonl").exists() or cell["settings"] == record["selected"]
    best = max(record["cells"], key=lambda c: c["score"])  # max keeps the first of equals, like the selection
    assert record["selected"] == best["settings"]
    # the selected cell's seed-0 run is also the final run: trained once
    final = json.loads((root / "out" / "runs" / "small" / f"bear-lam{best['settings']['objective.lam']}-seed0"
                        / "config.json").read_text())
    assert final["objective_config"]["lam"] == best["settings"]["objective.lam"]


def test_a_second_run_skips_every_finished_stage(finished, monkeypatch):
    root, config, _, _, _ = finished
    calls = []
    monkeypatch.setattr("bearrec.train.train", lambda *a, **k: calls.append("train"))
    monkeypatch.setattr("bearrec.evaluate.evaluate", lambda *a, **k: calls.append("evaluate"))
    lines: list[str] = []
    exp.run_experiment(config, root / "out", print_fn=lines.append)
    assert calls == []
    skipped = [line for line in lines if line.endswith("done earlier, skipped")]
    assert len(skipped) == len([line for line in lines if line.startswith("[stage")]) - 2 - 1  # reports, select


def test_another_config_in_the_same_output_is_refused(finished, tmp_path):
    root, _, _, _, _ = finished
    changed = tiny_experiment(root / "data", train={**TINY_TRAIN, "training": {**TINY_TRAIN["training"],
                                                                               "learning_rate": 0.5}})
    recorded = (root / "out" / "experiment.json").read_bytes()
    with pytest.raises(ConfigError, match=r"different config: training\.learning_rate: 0\.0001 → 0\.5.*--output"):
        exp.run_experiment(exp.experiment_from_dict(changed), root / "out", print_fn=lambda _: None)
    assert (root / "out" / "experiment.json").read_bytes() == recorded  # refused before anything was written


def test_the_command_line_runs_a_yaml_file_with_overrides(finished, tmp_path, capsys):
    root, _, _, _, _ = finished
    raw = tiny_experiment(root / "data", methods={"popularity": {}})
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["experiment", str(path), "seeds=[3]", "--output", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "report" / "small" / "summary.json").read_text())
    assert summary["methods"]["popularity"]["seeds"] == [3]
    assert "| popularity |" in capsys.readouterr().out


@pytest.mark.parametrize("change, message", [
    ({"methods": {"bert": {}}}, "methods.bert"),
    ({"methods": {"bear": {"grid": {"objective.lam": 0.1}}}}, "non-empty list"),
    ({"methods": {"bear": {"objective.name": "sft"}}}, "set by the method's name"),
    ({"seeds": [0, 0]}, "distinct integers"),
    ({"decoding": {"num_beams": 5, "search": ["greedy"]}}, "decoding.search"),
    ({"decoding": {"beams": 5}}, "unknown key 'beams'"),
    ({"tuning": {"metric": "ndcg@50"}}, "raise decoding.num_beams"),
    ({"datasets": {"small": {}}}, "exactly one of `path`"),
    ({"colour": 1}, "unknown key 'colour'"),
    ({"datasets": {"small": "data/small"}}, "datasets.small: must be a mapping"),
    ({"methods": {"bear": {"grid": [1, 2]}}}, "methods.bear.grid: must map settings"),
    ({"decoding": {"num_beams": 5, "search": 5}}, "decoding.search: must list"),
    ({"train": 5}, "train: must be a mapping"),
    ({"train": {"seed": 3}}, "train.seed: is set by the experiment"),
    ({"methods": {"sasrec": {"n_epoch": 2}}}, "methods.sasrec"),
    ({"methods": {"popularity": {"grid": {"k": [1, 2]}}}}, "popularity takes no settings"),
    ({"methods": {"sft": {"trainin.x": 1}}}, "methods.sft: "),
    ({"methods": {"bear": {"objective.lam": 0.1, "grid": {"objective.lam": [0.1, 1.0]}}}}, "also set outside"),
    ({"datasets": {"small": {"path": "x", "test_sample": 3}}}, "test_sample"),
    ({"tuning": {"seed": "zero"}}, "tuning.seed"),
    ({"diagnosis": {"rows": -1}}, "diagnosis.rows"),
    ({"datasets": {"small": {"path": "x", "index": {"level": 2}}}}, "datasets.small.index.level: is not an option"),
    ({"datasets": {"small": {"path": "x", "index": 3}}}, "datasets.small.index: must be a mapping"),
    ({"methods": {"codes": {"method": "sfft"}}}, "methods.codes: 'sfft' is neither a baseline"),
    ({"methods": {"sft": {"name": "x"}}}, "methods.sft.name: is set by the experiment"),
    ({"schedule": {"jobs": 0}}, "schedule.jobs: must be an integer >= 1"),
    ({"schedule": {"budget_s": -1}}, "schedule.budget_s: must be seconds > 0"),
    ({"schedule": {"limits_s": {"training": 5}}}, "schedule.limits_s.training: names no kind of stage"),
    ({"schedule": {"limits_s": {"train": "5 min"}}}, "schedule.limits_s.train: must be seconds"),
    ({"schedule": {"optional": "exact"}}, "schedule.optional: must list kinds"),
    ({"schedule": {"workers": 2}}, "schedule: unknown key 'workers'"),
    ({"decoding": {"num_beams": 5, "search": ["beam", "d3"], "assistant": "sft"}}, "decoding.assistant: must name a "
     "SASRec baseline"),
    ({"decoding": {"num_beams": 5, "search": ["diverse"], "groups": 2}}, "decoding.groups: 2 groups do not divide"),
    ({"decoding": {"num_beams": 5, "assistant_weights": [0.1, 1.0]}}, "decoding.assistant_weights: holds 1.0"),
    ({"decoding": {"num_beams": 5, "ig_weights": [1.5]}}, "decoding.ig_weights: holds 1.5"),
    ({"decoding": {"num_beams": 5, "diversity_penalty": -1}}, "decoding: the diversity penalty"),
])
def test_bad_configs_name_the_key_and_the_fix(tmp_path, change, message):
    raw = tiny_experiment(tmp_path)
    raw.update(change)
    with pytest.raises(ConfigError, match=message) as e:
        exp.experiment_from_dict(raw, "bad.yaml")
    assert "bad.yaml" in str(e.value) and "Fix:" in str(e.value)


def test_a_prepared_dataset_made_with_other_options_is_refused(tmp_path):
    raw = {"name": "x", "datasets": {"d": {"prepare": {"format": "bear-csv", "source": "somewhere"}}},
           "methods": ["popularity"]}
    config = exp.experiment_from_dict(raw)
    experiment = exp.Experiment(config, tmp_path)
    write_small_dataset(tmp_path / "data" / "d")
    (tmp_path / "data" / "d.prepare.json").write_text(json.dumps({"prepare": {"format": "bear-csv", "source": "else"},
                                                                  "test_sample": None}))
    with pytest.raises(ConfigError, match="prepared with other options"):
        experiment.stages()[0].done()


def test_the_shipped_configs_load(monkeypatch):
    demo = exp.load_experiment(exp.demo_config_path())
    assert [m.name for m in demo.methods][:2] == ["popularity", "sasrec"] and demo.seeds == [0]
    quick = exp.load_experiment(exp.demo_config_path(), exp.DEMO_QUICK)
    assert quick.datasets[0].test_sample == 40
    office = exp.load_experiment(Path(__file__).resolve().parents[1] / "configs" / "experiments" / "office-tiny.yaml")
    bear = next(m for m in office.methods if m.name == "bear")
    assert len(bear.cells()) == 6 and office.seeds == [0, 1, 2]
    # the office config gives every run the settings docs/results.md's Office runs were trained with
    config = exp.Experiment(office).train_config(office.datasets[0], bear, {"objective.lam": 0.25,
                                                                          "objective.xi": 1.0}, 1)
    assert (config.max_history, config.domain, config.max_valid_rows, config.objective.num_beams) == (5, "office", 500, 10)
    assert (config.objective.lam, config.objective.xi, config.seed) == (0.25, 1.0, 1)
    assert config.training["train_sampling_strategy"] == "group_by_length"
    smol = exp.load_experiment(Path(__file__).resolve().parents[1] / "configs" / "experiments" / "smollm2-office-cpu.yaml")
    bear_sft = next(m for m in smol.methods if m.name == "bear-sft")
    config = exp.Experiment(smol).train_config(smol.datasets[0], bear_sft, {}, 0)
    assert (config.model, config.lora.r, config.objective.name, config.objective.base) == ("smollm2-135m", 8, "bear", "sft")
    assert {"sft", "msl", "bear", "apao", "igd"} <= {m.name for m in smol.methods}  # issue 26's field, one seed
    # BEAR against the field: every objective of the field, D3 with a SASRec assistant tuned on validation
    assert {"apao", "apao-pairwise", "igd", "bear-sft", "bear+ce", "direct"} <= {m.name for m in office.methods}
    assert office.decoding.search == ["beam", "d3", "igd", "diverse", "exact"] and office.decoding.assistant == "sasrec"
    assert smol.datasets[0].prepare["train_sample"] == 1024 and smol.datasets[0].test_sample == 500
    assert smol.decoding.search == ["beam", "exact"] and smol.diagnosis.rows == 500
    # the GPU check's office stage (bench/gpu_check.py): the settings its bash version used, its limits as a schedule
    gpu = exp.load_experiment(Path(__file__).resolve().parents[1] / "configs" / "experiments" / "office-gpu.yaml")
    config = exp.Experiment(gpu).train_config(gpu.datasets[0], gpu.methods[0], {}, 0)
    assert (config.model, config.lora, config.max_history, config.max_train_rows, config.max_valid_rows) == (
        "smollm2-135m", None, 10, 10000, 200)
    assert {k: config.training[k] for k in ("learning_rate", "per_device_train_batch_size", "bf16", "num_train_epochs")} \
        == {"learning_rate": 2e-4, "per_device_train_batch_size": 32, "bf16": True, "num_train_epochs": 1}
    assert gpu.datasets[0].prepare["train_sample"] == 10000 and gpu.decoding.search == ["beam", "exact"]
    assert (gpu.decoding.max_expansions, gpu.decoding.batch_size, gpu.diagnosis.rows) == (1000, 64, 200)
    assert gpu.schedule.jobs == 3 and gpu.schedule.limits_s["train"] == 300 and gpu.schedule.isolated
    assert [s.method for s in exp.Experiment(gpu).stages() if s.kind == "exact"] == ["msl", "bear", "sft"]
    for name in ("semantic-ml100k", "semantic-office"):
        semantic = exp.load_experiment(Path(__file__).resolve().parents[1] / "configs" / "experiments" / f"{name}.yaml")
        config = exp.Experiment(semantic).train_config(semantic.datasets[0], semantic.methods[2], {}, 0)
        assert config.item_kind == "semantic_id" and semantic.datasets[0].index["embeddings"] == "lm:minilm-l6"


def test_evaluate_reads_a_baseline_run_without_decoding(finished, capsys):
    root, _, _, _, _ = finished
    run = root / "out" / "runs" / "small" / "popularity-seed0"
    before = json.loads((run / "metrics.json").read_text())
    assert main(["evaluate", str(run), "--output", str(run.parent / "popularity-again.json")]) == 0
    again = json.loads((run.parent / "popularity-again.json").read_text())
    assert again["ndcg@5"] == before["ndcg@5"] and again["n_rows"] == before["n_rows"]
    assert main(["evaluate", str(run), "--search", "exact"]) == 2
    assert "language models only" in capsys.readouterr().err


def test_finished_runs_are_not_reused_on_a_changed_dataset_or_beam_width(finished, tmp_path):
    import shutil

    root, config, _, _, _ = finished
    out = tmp_path / "out"
    shutil.copytree(root / "out", out)
    # more beams: the test metrics (and the tuning scores) no longer count as done
    wider = exp.experiment_from_dict(tiny_experiment(root / "data", decoding={"num_beams": 6}))
    experiment = exp.Experiment(wider, out)
    stages = {s.label: s for s in experiment.stages()}
    assert not stages["decode and evaluate sft seed 0 on small (test, beam search)"].done()
    assert not stages["diagnose pruning of sft seed 0 on small (test)"].done()
    # the dataset changed under the runs: refused, naming the run's config
    data = tmp_path / "data"
    write_small_dataset(data, n_users=31)
    changed = exp.experiment_from_dict(tiny_experiment(data))
    stages = exp.Experiment(changed, out).stages()
    train = next(s for s in stages if s.label == "train sft seed 0 on small")
    with pytest.raises(ConfigError, match="another version of the dataset"):
        train.done()


def test_a_baseline_grid_is_tuned_on_validation(tmp_path):
    write_small_dataset(tmp_path / "data")
    raw = tiny_experiment(tmp_path / "data", methods={"sasrec": {"embedding_dim": 8, "batch_size": 8, "n_sample": 16,
                                                                  "grid": {"n_epochs": [1, 2]}}}, seeds=[0])
    exp.run_experiment(exp.experiment_from_dict(raw), tmp_path / "out", print_fn=lambda _: None)
    record = json.loads((tmp_path / "out" / "tuning" / "small" / "sasrec.json").read_text())
    assert [c["name"] for c in record["cells"]] == ["n_epochs1", "n_epochs2"]
    chosen = exp.cell_name(record["selected"])
    run = tmp_path / "out" / "runs" / "small" / f"sasrec-{chosen}-seed0"
    assert (run / "metrics-valid.json").is_file() and (run / "metrics.json").is_file()
    assert json.loads((run / "config.json").read_text())["baseline"]["max_len"] == 3  # the prompts' max_history


def test_semantic_ids_are_indexed_once_per_dataset_and_runs_train_on_them(tmp_path):
    write_small_dataset(tmp_path / "data")
    index = {"levels": 2, "codes": 4}
    raw = tiny_experiment(tmp_path / "data", methods={"sft": {}}, seeds=[0], diagnosis={"rows": 0},
                          decoding={"num_beams": 5, "search": ["beam"]}, train={**TINY_TRAIN, "item_kind": "semantic_id"})
    raw["datasets"]["small"]["index"] = index
    lines: list[str] = []
    exp.run_experiment(exp.experiment_from_dict(raw), tmp_path / "out", print_fn=lines.append)
    record = json.loads((tmp_path / "data" / "semantic_ids.json").read_text())
    assert (record["levels"], record["codes"], record["embeddings"], record["seed"]) == (2, 4, "collaborative", 0)
    assert any("semantic IDs of small" in line for line in lines)
    run = json.loads((tmp_path / "out" / "runs" / "small" / "sft-seed0" / "config.json").read_text())
    assert run["item_kind"] == "semantic_id" and "semantic_ids.json" in run["files"]
    again: list[str] = []
    exp.run_experiment(exp.experiment_from_dict(raw), tmp_path / "out", print_fn=again.append)
    assert any("semantic IDs of small: done earlier, skipped" in line for line in again)
    raw["datasets"]["small"]["index"] = {**index, "codes": 3}
    with pytest.raises(ConfigError, match="semantic_ids.json was made with other options"):
        exp.run_experiment(exp.experiment_from_dict(raw), tmp_path / "out", print_fn=lambda _: None)


def test_one_objective_twice_under_names_of_its_own(tmp_path):
    """`sid-sft: {method: sft, items: semantic_id}` beside `sft`: two rows of the tables, runs in folders of their own."""
    write_small_dataset(tmp_path / "data")
    raw = tiny_experiment(tmp_path / "data", seeds=[0], diagnosis={"rows": 0},
                          decoding={"num_beams": 5, "search": ["beam"]},
                          methods={"top": {"method": "popularity"}, "sft": {},
                                   "sid-sft": {"method": "sft", "item_kind": "semantic_id"}})
    raw["datasets"]["small"]["index"] = {"levels": 2, "codes": 4}
    exp.run_experiment(exp.experiment_from_dict(raw), tmp_path / "out", print_fn=lambda _: None)
    runs = tmp_path / "out" / "runs" / "small"
    configs = {name: json.loads((runs / f"{name}-seed0" / "config.json").read_text()) for name in ("top", "sft", "sid-sft")}
    assert [configs[n]["method"] for n in ("top", "sft", "sid-sft")] == ["top", "sft", "sid-sft"]
    assert configs["top"]["objective"] == "popularity"
    assert (configs["sft"]["item_kind"], configs["sid-sft"]["item_kind"]) == ("title", "semantic_id")
    assert configs["sft"]["name"] is None and configs["sid-sft"]["objective"] == "sft"
    summary = json.loads((tmp_path / "out" / "report" / "small" / "summary.json").read_text())
    assert set(summary["methods"]) == {"top", "sft", "sid-sft"}


def test_a_second_experiment_on_the_same_folder_is_refused_and_a_dead_ones_lock_taken_over(tmp_path):
    import subprocess
    import sys

    write_small_dataset(tmp_path / "data")
    config = exp.experiment_from_dict(tiny_experiment(tmp_path / "data", methods={"popularity": {}}, seeds=[0]))
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / "experiment.lock").write_text(str(holder.pid))
        with pytest.raises(ConfigError, match=f"process {holder.pid}"):
            exp.run_experiment(config, out, print_fn=lambda _: None)
    finally:
        holder.kill()
        holder.wait()
    exp.run_experiment(config, out, print_fn=lambda _: None)  # its process is gone: the lock is taken over
    assert not (out / "experiment.lock").exists() and (out / "results.md").is_file()


def test_the_docs_example_is_a_valid_experiment():
    import re

    page = (Path(__file__).resolve().parents[1] / "docs" / "experiments.md").read_text()
    section = page[page.index("## A complete example"):]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)[1]
    config = exp.experiment_from_dict(yaml.safe_load(block), "docs/experiments.md")
    names = [m.name for m in config.methods]
    assert names[:2] == ["popularity", "sasrec"] and "bear-lora" in names
    assert next(m for m in config.methods if m.name == "bear-lora").method == "bear"


def test_each_seed_runs_every_methods_cheap_stages_before_any_exact_search(tmp_path):
    """Per seed: baselines, trainings, beam decodings and diagnoses, each phase for every method, so the beam-search
    results and pruning rates of all methods come before the slow exact searches; of those, the masked-score methods'
    (cheap) before the full-score ones' (SFT, bear-sft), whatever the config's order."""
    raw = tiny_experiment(tmp_path / "data", methods={"sft": {}, "popularity": {}, "bear-sft": {}, "bear": {}})
    stages = exp.Experiment(exp.experiment_from_dict(raw), tmp_path / "out").stages()
    final = [(s.kind, s.method) for s in stages if s.seed == 0]
    assert final == [("baseline", "popularity"), *((kind, m) for kind in ("train", "evaluate", "diagnose")
                                                   for m in ("sft", "bear-sft", "bear")),
                     ("exact", "bear"), ("exact", "sft"), ("exact", "bear-sft")]
    assert all(s.method in s.label and f"seed {s.seed}" in s.label for s in stages if s.seed is not None)
    assert [s.label for s in stages].index(next(s.label for s in stages if s.seed == 1)) == \
        [s.label for s in stages].index(next(s.label for s in stages if s.kind == "exact" and s.method == "bear-sft"
                                               and s.seed == 0)) + 1
    assert [(s.kind, s.dataset) for s in stages[-2:]] == [("report", "small"), ("report", None)]


def test_a_schedule_runs_each_stage_in_a_process_of_its_own(finished, tmp_path):
    """schedule (jobs, budget, limits): every stage in a child process, two at a time, with the same results as in
    this process (the finished fixture's seed-0 runs of the same settings); an optional kind given too little of the
    budget is skipped without failing the experiment; a second invocation finds every run done."""
    root, _, _, _, _ = finished
    raw = tiny_experiment(root / "data", methods={"popularity": {}, "sft": {}}, seeds=[0],
                          decoding={"num_beams": 5, "search": ["beam"]}, diagnosis={"rows": 3},
                          schedule={"jobs": 2, "budget_s": 3600, "limits_s": {"train": 600}, "optional": ["diagnose"],
                                    "optional_min_s": 4000})
    lines: list[str] = []
    results = exp.run_experiment(exp.experiment_from_dict(raw), tmp_path / "out", print_fn=lines.append)
    records = json.loads((tmp_path / "out" / "stages.json").read_text())
    assert [(r["kind"], r["method"], r["status"]) for r in records] == [
        ("baseline", "popularity", "ok"), ("train", "sft", "ok"), ("evaluate", "sft", "ok"),
        ("diagnose", "sft", "skipped"), ("report", None, "ok"), ("report", None, "ok")]
    assert records[3]["note"] == "less than 4000 s left" and records[1]["limit_s"] == 600
    assert all(Path(r["log"]).is_file() and r["rc"] == 0 for r in records if r["status"] == "ok")
    assert "| sft |" in results.read_text() and any("train sft seed 0 on small: OK in " in line for line in lines)
    for run in ("popularity-seed0", "sft-seed0"):  # the same numbers as the runs made in this process
        made_here = json.loads((root / "out" / "runs" / "small" / run / "metrics.json").read_text())
        made_there = json.loads((tmp_path / "out" / "runs" / "small" / run / "metrics.json").read_text())
        assert {k: made_there[k] for k in ("hr@5", "ndcg@5", "n_rows")} == {k: made_here[k] for k in
                                                                             ("hr@5", "ndcg@5", "n_rows")}
    exp.run_experiment(exp.experiment_from_dict(raw), tmp_path / "out", print_fn=lambda _: None)
    again = json.loads((tmp_path / "out" / "stages.json").read_text())
    assert [r["status"] for r in again] == ["done", "done", "done", "skipped", "ok", "ok"]


def test_a_stage_past_its_limit_is_stopped_and_the_stages_it_covers_skipped(finished, tmp_path, monkeypatch):
    """A training killed at its limit is a timeout; its run's later stages are skipped, the other methods' go on, and
    the experiment ends with an error naming what did not finish."""
    from bearrec.errors import BearrecError
    from bearrec.experiment import isolated

    root, _, _, _, _ = finished
    monkeypatch.setattr(isolated, "MIN_STAGE_S", 0)  # a limit shorter than the child process takes to start
    raw = tiny_experiment(root / "data", methods={"popularity": {}, "sft": {}}, seeds=[0],
                          decoding={"num_beams": 5, "search": ["beam"]}, diagnosis={"rows": 0},
                          schedule={"limits_s": {"train": 0.5}})
    with pytest.raises(BearrecError, match=r"stages did not finish: train sft seed 0 on small \(timeout: hit its") as e:
        exp.run_experiment(exp.experiment_from_dict(raw), tmp_path / "out", print_fn=lambda _: None)
    assert "Fix: read their logs" in str(e.value)
    records = {r["kind"] + (f" {r['method']}" if r["method"] else ""): r
               for r in json.loads((tmp_path / "out" / "stages.json").read_text())}
    assert records["baseline popularity"]["status"] == "ok"
    assert records["train sft"]["status"] == "timeout" and records["train sft"]["seconds"] < 10
    assert records["evaluate sft"]["status"] == "skipped"
    assert records["evaluate sft"]["note"] == "after train sft seed 0 on small, which did not finish"
    assert not (tmp_path / "out" / "runs" / "small" / "sft-seed0" / "model").exists()
    assert not (tmp_path / "out" / "experiment.lock").exists()


def test_d3_tunes_its_weight_on_validation_per_method_and_diverse_records_its_settings(tmp_path):
    """D3's assistant weight is chosen on the validation split at the tuning seed (each weight's score kept), the test
    split is decoded with that weight and the same seed's SASRec, diverse beam search's rows carry its settings, and a
    second run finds every stage done."""
    write_small_dataset(tmp_path / "data")
    sasrec = {"embedding_dim": 8, "batch_size": 8, "n_sample": 16, "n_epochs": 1}
    raw = tiny_experiment(tmp_path / "data", methods={"sasrec": sasrec, "sft": {}}, seeds=[0],
                          decoding={"num_beams": 6, "search": ["beam", "d3", "diverse", "igd"], "assistant": "sasrec",
                                    "assistant_weights": [0.0, 0.5], "groups": 2, "diversity_penalty": 0.5,
                                    "ig_weights": [0.0, 1.0]},
                          diagnosis={"rows": 0})
    config = exp.experiment_from_dict(raw)
    exp.run_experiment(config, tmp_path / "out", print_fn=lambda _: None)
    record = json.loads((tmp_path / "out" / "tuning" / "small" / "weights" / "sft-d3.json").read_text())
    assert record["split"] == "valid" and set(record["scores"]) == {"0.0", "0.5"}
    best = max([0.0, 0.5], key=lambda w: (record["scores"][str(w)], -[0.0, 0.5].index(w)))
    assert record["selected"] == best
    run = tmp_path / "out" / "runs" / "small" / "sft-seed0"
    d3_rows = list(read_jsonl(run / "predictions-d3.jsonl"))
    assert {r["assistant_weight"] for r in d3_rows} == {best}
    if best:
        assistant = tmp_path / "out" / "runs" / "small" / "sasrec-seed0"
        assert {r["assistant"] for r in d3_rows} == {scorer_label(assistant)}  # the run and its scorer's digest
        assert scorer_label(assistant).startswith(f"{assistant} (scorer sha256:")
    diverse_rows = list(read_jsonl(run / "predictions-diverse.jsonl"))
    assert {(r["search"], r["groups"], r["diversity_penalty"]) for r in diverse_rows} == {("diverse", 2, 0.5)}
    assert (run / "metrics-d3.json").is_file() and (run / "metrics-diverse.json").is_file()
    ig = json.loads((tmp_path / "out" / "tuning" / "small" / "weights" / "sft-igd.json").read_text())
    assert set(ig["scores"]) == {"0.0", "1.0"}
    assert {r["ig_weight"] for r in read_jsonl(run / "predictions-igd.jsonl")} == {ig["selected"]}
    stages = exp.Experiment(config, tmp_path / "out").stages()
    assert [s.kind for s in stages if s.kind in ("d3", "diverse", "igd")] == ["d3", "diverse", "igd"]
    assert all(s.done() for s in stages if s.kind in ("d3", "diverse", "igd", "evaluate", "train", "baseline"))
    assert "IGD decoding weight of sft" in (tmp_path / "out" / "results.md").read_text()
