"""Replay through `holdfast eval`: oracle, recorded predictions, bad inputs, resume and a real model."""

from __future__ import annotations

import json

import pytest

from agent.actions import Click, Done, Type
from agent.cli import main
from eval.datasets import load_episodes
from eval.replay import OraclePolicy, format_actions, parse_actions, run_replay
from eval.results import RunResults



def run_eval(capsys, *arguments):
    """Run `holdfast eval ... --json`; return the exit code and the JSON printed on stdout."""
    code = main(["eval", *map(str, arguments), "--json"])
    stdout = capsys.readouterr().out
    return code, json.loads(stdout)


def read_steps(out):
    return [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]


# Oracle -----------------------------------------------------------------------------------------

def test_oracle_scores_one_on_every_sample_step(sample_dir, tmp_path, capsys, helpers):
    code, summary = run_eval(capsys, sample_dir, "--policy", "oracle", "--out", tmp_path / "out")
    assert code == 0
    steps = read_steps(tmp_path / "out")
    assert len(steps) == 27  # 10 + 10 + 7 recorded steps
    assert all(step["score"] == 1.0 for step in steps), [s for s in steps if s["score"] != 1.0]
    assert summary["step_score_mean"] == 1.0
    assert summary["step_success_rate"] == 1.0
    assert summary["episode_success_rate"] == 1.0
    assert summary["android_control_click_accuracy"] == 1.0
    assert sorted(summary["per_trajectory"]) == sorted(helpers.SAMPLE_IDS)
    assert summary["errors"] == []


def test_results_files_are_complete(sample_dir, tmp_path, capsys):
    run_eval(capsys, sample_dir / "s_df0fd37049f470c2.json", "--policy", "oracle", "--out", tmp_path, "--seed", "7")
    results = json.loads((tmp_path / "results.json").read_text())
    for key in ("step_score_mean", "step_success_rate", "episode_success_rate", "per_action_type",
                "per_trajectory", "errors", "configuration", "seed", "code_version", "date", "machine"):
        assert key in results, key
    assert results["seed"] == 7
    assert results["complete"] is True
    assert results["configuration"]["policy"] == "oracle"
    assert results["per_action_type"]["scroll"]["count"] == 1
    report = (tmp_path / "report.md").read_text()
    assert "s_df0fd37049f470c2" in report and "| step score mean | 1.000 |" in report
    step = read_steps(tmp_path)[0]
    assert {"prediction", "ground_truth", "score", "latency_s", "state_bytes"} <= set(step)


# Predictions ------------------------------------------------------------------------------------

# Perturbed predictions and their scores, computed by hand (see test_metrics for the rules).
PERTURBATIONS = {
    # Keys in another order and case: the set of keys matches.
    ("s_5473959e0f6e21f7", 2): ("pyautogui.hotkey('C', 'ctrl')", 1.0),
    # The right click plus an extra action: 1 * 1/2.
    ("s_a96285eb665bef92", 2): ("click(0.822,0.911)\nwait(1.0)", 0.5),
    # Inside the box but 0.09 from the recorded point: the box decides.
    ("s_a96285eb665bef92", 4): ("click(0.390,0.500)", 1.0),
    # Just below the box (bottom edge 0.17267), 0.0169 from the recorded point (0.979, 0.1631):
    # exp(-120 * (0.0169 - 0.0141421356)) = 0.7182455871.
    ("s_a96285eb665bef92", 6): ("click(0.979,0.180)", 0.7182455871),
    # A typo: "cardfotofrm" vs "cardphotoform" is 3 edits over 13, similarity 10/13,
    # below 0.8, so (10/13) / 0.8 = 25/26.
    ("s_a96285eb665bef92", 9): ('type("CardFotoFrm")', 25 / 26),
    # Write then Enter merges into "george orwell\n": similarity 0.9 with the newline factor.
    ("s_df0fd37049f470c2", 3): ("pyautogui.write('george orwell')\npyautogui.press('enter')", 1.0),
    # Out of the screen: unparseable, so no action.
    ("s_df0fd37049f470c2", 9): ("click(2,2)", 0.0),
    # The wrong status.
    ("s_df0fd37049f470c2", 10): ("done(failure)", 0.0),
}
MISSING = ("s_df0fd37049f470c2", 7)  # no prediction: scores 0


def write_predictions(sample_dir, path):
    episodes, _ = load_episodes([sample_dir])
    with open(path, "w") as handle:
        for episode in episodes:
            for step in episode.steps:
                key = (episode.trajectory_id, step.number)
                if key == MISSING:
                    continue
                action = PERTURBATIONS[key][0] if key in PERTURBATIONS else format_actions(
                    [target.action for target in step.actions]
                )
                handle.write(json.dumps({"trajectory_id": key[0], "step": key[1], "action": action, "latency_s": 0.25}) + "\n")


def test_predictions_with_perturbations_score_by_hand(sample_dir, tmp_path, capsys):
    predictions = tmp_path / "predictions.jsonl"
    write_predictions(sample_dir, predictions)
    out = tmp_path / "out"
    code, summary = run_eval(capsys, sample_dir, "--policy", "predictions", "--predictions", predictions, "--out", out)
    assert code == 0

    scores = {(step["trajectory_id"], step["step"]): step["score"] for step in read_steps(out)}
    expected = {key: 1.0 for key in scores}
    expected.update({key: value for key, (_, value) in PERTURBATIONS.items()})
    expected[MISSING] = 0.0
    for key, value in expected.items():
        assert scores[key] == pytest.approx(value, rel=1e-7), key

    # 27 steps: 3 score 0, 3 score a fraction (0.5, 0.7182455871, 25/26) and 21 score 1.
    hand_total = 21 + 0.5 + 0.7182455871 + 25 / 26
    assert summary["step_score_mean"] == pytest.approx(hand_total / 27, rel=1e-7)
    assert summary["step_success_rate"] == pytest.approx(21 / 27)
    assert summary["episode_success_rate"] == pytest.approx(1 / 3)  # only s_5473959e0f6e21f7 is perfect
    assert summary["per_trajectory"]["s_5473959e0f6e21f7"]["episode_success"] is True
    assert summary["latency_s"]["mean"] == pytest.approx(0.25)  # reported by the external agent


def test_predictions_parse_error_recorded(sample_dir, tmp_path, capsys):
    predictions = tmp_path / "p.jsonl"
    predictions.write_text(json.dumps({"trajectory_id": "s_df0fd37049f470c2", "step": 2, "action": "click(2,2)"}) + "\n")
    run_eval(capsys, sample_dir / "s_df0fd37049f470c2.json", "--policy", "predictions", "--predictions", predictions,
             "--out", tmp_path / "out")
    first = read_steps(tmp_path / "out")[0]
    assert first["score"] == 0.0
    assert "less than or equal to 1" in first["parse_error"]
    assert first["latency_s"] is None


def test_invalid_predictions_file_rejected(sample_dir, tmp_path, capsys):
    predictions = tmp_path / "p.jsonl"
    predictions.write_text('{"trajectory_id": "a", "step": "one", "action": "done(success)"}\n')
    code = main(["eval", str(sample_dir), "--policy", "predictions", "--predictions", str(predictions)])
    assert code == 2
    assert "p.jsonl line 1" in capsys.readouterr().err


def test_parse_actions_forms():
    assert parse_actions("") == []
    assert parse_actions("click(0.1,0.2)\nclick(0.3,0.4)") == [Click(x=0.1, y=0.2), Click(x=0.3, y=0.4)]
    assert parse_actions("pyautogui.click(x=0.1, y=0.2)") == [Click(x=0.1, y=0.2)]


# Bad inputs -------------------------------------------------------------------------------------

def test_bad_trajectories_reported_and_others_scored(tmp_path, capsys, helpers):
    data = tmp_path / "data"
    helpers.write_agentnetbench(data, "good", helpers.good_steps("good"))
    (data / "broken.json").write_text("{ not json")
    missing = helpers.good_steps("missing")
    missing[2]["create"] = False
    helpers.write_agentnetbench(data, "missing", missing)
    unknown = helpers.good_steps("unknown")
    unknown[1]["ground_truth_actions"] = [{"type": "levitate", "params": {}, "metadata": {}}]
    helpers.write_agentnetbench(data, "unknown", unknown)
    helpers.write_agentnetbench(data, "corrupt", helpers.good_steps("corrupt"))
    (data / "images" / "corrupt_2.png").write_bytes(b"this is not a PNG file")

    out = tmp_path / "out"
    code, summary = run_eval(capsys, data, "--policy", "oracle", "--out", out)
    assert code == 1  # some trajectories were skipped
    assert list(summary["per_trajectory"]) == ["good"]
    assert summary["step_score_mean"] == 1.0
    errors = {(error["source"], error["step"]): error["message"] for error in summary["errors"]}
    assert "invalid JSON" in errors[(str(data / "broken.json"), None)]
    assert "not found" in errors[(str(data / "missing.json"), 3)]
    assert "unknown action type 'levitate'" in errors[(str(data / "unknown.json"), 2)]
    assert "unreadable screenshot" in errors[(str(data / "images" / "corrupt_2.png"), 2)]
    assert len(errors) == 4
    # The corrupt trajectory's first step was written, then removed when it failed.
    assert {step["trajectory_id"] for step in read_steps(out)} == {"good"}
    assert json.loads((out / "results.json").read_text())["errors"] == summary["errors"]


def test_existing_output_needs_resume(sample_dir, tmp_path, capsys):
    run_eval(capsys, sample_dir / "s_df0fd37049f470c2.json", "--policy", "oracle", "--out", tmp_path)
    code = main(["eval", str(sample_dir), "--policy", "oracle", "--out", str(tmp_path)])
    assert code == 2
    assert "--resume" in capsys.readouterr().err


# Resume -----------------------------------------------------------------------------------------

class InterruptingOracle(OraclePolicy):
    """The oracle, counting starts per trajectory, interrupted like Ctrl-C at a chosen step."""

    def __init__(self, interrupt_at=None):
        super().__init__()
        self.interrupt_at = interrupt_at
        self.started: list[str] = []
        self.trajectory_id = None

    def set_episode(self, episode):
        super().set_episode(episode)
        self.trajectory_id = episode.trajectory_id

    def start(self, instruction):
        super().start(instruction)
        self.started.append(self.trajectory_id)

    def predict(self, *, commit=True):
        if (self.trajectory_id, self.position) == self.interrupt_at:
            raise KeyboardInterrupt
        return super().predict(commit=commit)


def replay_into(out, policy, episodes, resume):
    results = RunResults(out, {"policy": "oracle", "seed": 0}, resume=resume)
    pending = [episode for episode in episodes if not results.is_finished(episode.trajectory_id)]
    run_replay(
        pending, policy,
        on_step=results.add_step,
        on_trajectory=lambda episode, records: results.finish_trajectory(episode.trajectory_id, records),
    )
    return results.close()


def test_resume_skips_finished_trajectories(sample_dir, tmp_path):
    episodes, _ = load_episodes([sample_dir])
    out = tmp_path / "out"
    first = InterruptingOracle(interrupt_at=(episodes[1].trajectory_id, 3))
    with pytest.raises(KeyboardInterrupt):
        replay_into(out, first, episodes, resume=False)
    assert first.started == [episodes[0].trajectory_id, episodes[1].trajectory_id]
    interrupted = read_steps(out)
    assert len(interrupted) == 10 + 3  # the first trajectory and 3 steps of the second
    assert list(json.loads((out / "results.json").read_text())["per_trajectory"]) == [episodes[0].trajectory_id]

    second = InterruptingOracle()
    summary = replay_into(out, second, episodes, resume=True)
    assert second.started == [episodes[1].trajectory_id, episodes[2].trajectory_id]
    steps = read_steps(out)
    assert len(steps) == 27
    assert len({(step["trajectory_id"], step["step"]) for step in steps}) == 27  # no step twice
    assert steps[:10] == interrupted[:10]
    assert summary["trajectories"] == 3
    assert summary["step_score_mean"] == 1.0


def test_resume_of_finished_run_replays_nothing(sample_dir, tmp_path, capsys):
    out = tmp_path / "out"
    _, before = run_eval(capsys, sample_dir, "--policy", "oracle", "--out", out)
    lines = (out / "steps.jsonl").read_text()
    code, after = run_eval(capsys, sample_dir, "--policy", "oracle", "--out", out, "--resume")
    assert code == 0
    assert (out / "steps.jsonl").read_text() == lines
    assert after["per_trajectory"] == before["per_trajectory"]


def test_resume_with_other_policy_rejected(sample_dir, tmp_path, capsys):
    out = tmp_path / "out"
    run_eval(capsys, sample_dir / "s_df0fd37049f470c2.json", "--policy", "oracle", "--out", out)
    code = main(["eval", str(sample_dir), "--policy", "model", "--model", "tiny", "--out", str(out), "--resume"])
    assert code == 2
    assert "policy='oracle'" in capsys.readouterr().err


# OSWorld and Holdfast folders end to end ---------------------------------------------------------

def test_osworld_folder_oracle(tmp_path, capsys, helpers):
    folder = tmp_path / "osworld" / "chrome" / "abc-123"
    folder.mkdir(parents=True)
    for name in ("initial_state.png", "step_1.png", "step_2.png", "step_3.png"):
        helpers.write_png(folder / name, (1920, 1080))
    lines = [
        {"step_num": 1, "action": "pyautogui.click(960, 540)", "screenshot_file": "step_1.png"},
        {"step_num": 2, "action": "pyautogui.typewrite('hello world')", "screenshot_file": "step_2.png"},
        {"step_num": 3, "action": "DONE", "screenshot_file": "step_3.png"},
    ]
    (folder / "traj.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    code, summary = run_eval(capsys, tmp_path / "osworld", "--policy", "oracle")
    assert code == 0
    assert summary["per_trajectory"]["abc-123"]["steps"] == 3
    assert summary["step_score_mean"] == 1.0


def test_holdfast_folder_oracle(tmp_path, capsys, helpers):
    helpers.record_holdfast(tmp_path / "runs" / "run-1", [
        ("click(0.500,0.500)", Click(x=0.5, y=0.5)),
        ('type("hello")', Type(text="hello")),
        ("done(success)", Done()),
    ])
    code, summary = run_eval(capsys, tmp_path / "runs", "--policy", "oracle")
    assert code == 0
    assert summary["per_trajectory"]["run-1"]["steps"] == 3
    assert summary["episode_success_rate"] == 1.0


# A real model -----------------------------------------------------------------------------------

@pytest.mark.parametrize("policy", ["model", "transformer"])
def test_tiny_model_run_completes(sample_dir, tmp_path, capsys, policy):
    out = tmp_path / "out"
    code, summary = run_eval(capsys, sample_dir / "s_df0fd37049f470c2.json", "--policy", policy, "--model", "tiny",
                             "--out", out)
    assert code == 0
    steps = read_steps(out)
    assert len(steps) == 7
    for step in steps:
        assert 0.0 <= step["score"] <= 1.0
        assert step["latency_s"] > 0
        assert step["state_bytes"] > 0
    results = json.loads((out / "results.json").read_text())
    expected_model = "tiny" if policy == "model" else "tiny-transformer"
    assert results["configuration"]["model"] == expected_model
    assert summary["state_bytes"]["max"] > 0


def test_unmatched_prediction_ids_are_warned(tmp_path, caplog, sample_dir):
    import json

    from agent.cli import main

    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text(json.dumps({"trajectory_id": "s_typo", "step": 1, "action": "click(0.5,0.5)"}) + "\n")
    with caplog.at_level("WARNING"):
        main(["eval", str(sample_dir), "--policy", "predictions", "--predictions", str(predictions), "--json"])
    assert any("match no loaded trajectory: s_typo" in record.getMessage() for record in caplog.records)
