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
