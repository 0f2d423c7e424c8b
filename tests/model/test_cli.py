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
