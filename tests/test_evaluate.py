"""Evaluation glue: file naming of partial runs and when existing predictions may be reused."""
import json

from bearrec.evaluate import predictions_are_current
from bearrec.run_dir import RunDir


def test_partial_and_other_split_files_never_shadow_the_full_test_files(tmp_path):
    assert RunDir(tmp_path).artefact("predictions", "test") == tmp_path / "predictions.jsonl"
    assert RunDir(tmp_path).artefact("metrics", "test") == tmp_path / "metrics.json"
    assert RunDir(tmp_path).artefact("metrics", "valid") == tmp_path / "metrics-valid.json"
    assert RunDir(tmp_path).artefact("predictions", "test", 50) == tmp_path / "predictions-first50.jsonl"
    assert RunDir(tmp_path).artefact("diagnosis", "valid", 5) == tmp_path / "diagnosis-valid-first5.json"


def test_predictions_are_reused_only_with_all_rows_and_the_same_beams(tmp_path):
    path = tmp_path / "predictions.jsonl"
    assert not predictions_are_current(path, 2, 10)
    path.write_text("".join(json.dumps({"index": i, "beams": 10, "recommendations": []}) + "\n" for i in range(2)))
    assert predictions_are_current(path, 2, 10)
    assert not predictions_are_current(path, 3, 10)  # rows missing
    assert not predictions_are_current(path, 2, 5)  # other beam size
    path.write_text("".join(json.dumps({"index": i, "beams": 10, "k": 5, "recommendations": []}) + "\n" for i in range(2)))
    assert not predictions_are_current(path, 2, 10)  # `recommend --k 5 --num-beams 10`: lists shorter than the beams


def test_exact_predictions_are_reused_only_for_exact_search_with_the_same_k(tmp_path):
    path = tmp_path / "predictions-exact.jsonl"
    path.write_text("".join(json.dumps({"index": i, "search": "exact", "k": 10, "certified": True,
                                        "recommendations": []}) + "\n" for i in range(2)))
    assert predictions_are_current(path, 2, 10, "exact")
    assert not predictions_are_current(path, 2, 5, "exact")
    assert not predictions_are_current(path, 2, 10)  # not beam-search predictions


def test_evaluate_with_exact_search_reports_the_certified_share(small_run, tmp_path):
    from run_fixtures import copy_run

    from bearrec.evaluate import evaluate

    run = copy_run(small_run, tmp_path)
    metrics = evaluate(run, search="exact", num_beams=3, limit=3, max_expansions=500)
    assert (run / "predictions-exact-first3.jsonl").exists() and (run / "metrics-exact-first3.json").exists()
    assert metrics["search"] == "exact" and 0 <= metrics["certified_share"] <= 1 and metrics["n_rows"] == 3
    assert not (run / "predictions-first3.jsonl").exists()
