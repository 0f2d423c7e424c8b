from agent.cli import main


def test_model_info_lists_presets(capsys):
    assert main(["model", "info", "tiny", "tiny-transformer"]) == 0
    output = capsys.readouterr().out
    assert "tiny-transformer" in output
    assert "M-*M-M*-" in output


def test_unknown_preset_is_one_line_error(capsys):
    assert main(["model", "info", "tinny"]) == 2
    error = capsys.readouterr().err
    assert "holdfast model: error: 'tinny' is neither a model folder nor a preset" in error
    assert "Traceback" not in error


def test_train_without_data_is_one_line_error(capsys, tmp_path):
    assert main(["train", str(tmp_path), "--out", str(tmp_path / "out"), "--preset", "tiny", "--steps", "1"]) == 2
    error = capsys.readouterr().err
    assert f"holdfast train: error: no trajectories (task.json) under {tmp_path}" in error


def test_missing_model_folder_says_not_found():
    import pytest

    from model.checkpoint import CheckpointError, build_model

    with pytest.raises(CheckpointError, match="no/such/model: model folder not found"):
        build_model("./no/such/model")


def test_model_probe_reports_screenshot_reliance(capsys, tmp_path):
    import json

    from model.checkpoint import build_model, save_model
    from tests.tools.test_train import write_demonstrations

    write_demonstrations(tmp_path / "data", count=4)
    save_model(build_model("tiny", seed=2), tmp_path / "model")
    assert main(["model", "probe", str(tmp_path / "model"), str(tmp_path / "data"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["episodes"] == 4
    difference = result["swapped_screenshots_loss"] - result["own_screenshots_loss"]
    assert abs(result["increase"] - difference) <= 2e-5  # each figure is rounded to 5 decimals


def test_model_probe_rejects_one_episode(capsys, tmp_path):
    assert main(["model", "probe", str(tmp_path), str(tmp_path), "--episodes", "1"]) == 2
    assert "invalid --episodes 1: use 2 or more" in capsys.readouterr().err


def test_transformer_model_resolution(tmp_path):
    import pytest

    from model.policy import transformer_model

    assert transformer_model(None) == "practice-transformer"
    assert transformer_model("tiny") == "tiny-transformer"
    assert transformer_model("tiny-transformer") == "tiny-transformer"
    folder = tmp_path / "twin"
    folder.mkdir()
    assert transformer_model(str(folder)) == str(folder)
    with pytest.raises(ValueError, match="'runs/no-such-twin' is neither a folder nor a preset"):
        transformer_model("runs/no-such-twin")


def test_unknown_transformer_rejected_by_both_clis(capsys, tmp_path):
    # Practice rejects the name before it starts a desktop, so no DISPLAY is needed here.
    assert main(["eval", str(tmp_path), "--policy", "transformer", "--model", "no-such-twin",
                 "--out", str(tmp_path / "results")]) == 2
    eval_error = capsys.readouterr().err
    assert main(["practice", "--runtime-dir", str(tmp_path / "desktop"), "run", "click-test", "--policy",
                 "transformer", "--model", "no-such-twin", "--out", str(tmp_path / "runs")]) == 2
    practice_error = capsys.readouterr().out
    for error in (eval_error, practice_error):
        assert "'no-such-twin' is neither a folder nor a preset" in error
    assert not (tmp_path / "desktop" / "desktop.json").exists()
