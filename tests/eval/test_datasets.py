"""Loading the three trajectory formats, and the errors for bad trajectories."""

from __future__ import annotations

import json

import pytest

from agent.actions import Click, Done, Drag, Key, Move, Scroll, Type, Wait
from eval.datasets import (
    FORMAT_AGENTNETBENCH,
    FORMAT_HOLDFAST,
    FORMAT_OSWORLD,
    load_episodes,
    pixels_to_fractions,
)



# AgentNetBench --------------------------------------------------------------------------------

def test_sample_loads_all_three(sample_dir, helpers):
    episodes, errors = load_episodes([sample_dir])
    assert errors == []
    assert sorted(episode.trajectory_id for episode in episodes) == sorted(helpers.SAMPLE_IDS)
    assert all(episode.format == FORMAT_AGENTNETBENCH for episode in episodes)


def test_sample_step_numbers_skip(sample_dir):
    episodes, _ = load_episodes([sample_dir / "s_5473959e0f6e21f7.json"])
    assert [step.number for step in episodes[0].steps] == [1, 2, 3, 5, 6, 7, 8, 9, 10, 11]


def test_sample_move_drag_merged(sample_dir):
    episodes, _ = load_episodes([sample_dir / "s_5473959e0f6e21f7.json"])
    (target,) = episodes[0].steps[0].actions
    assert target.action == Drag(x=0.328, y=0.4697, to_x=0.5025, to_y=0.6039)
    assert target.point == (0.328, 0.4697)
    assert target.to_point == (0.5025, 0.6039)
    assert target.boxes[0][0] == pytest.approx(0.32117161716171616)
    assert target.to_boxes[0][0] == pytest.approx(0.49920792079207915)


def test_sample_move_then_scroll_is_one_scroll(sample_dir):
    episodes, _ = load_episodes([sample_dir / "s_df0fd37049f470c2.json"])
    step = next(step for step in episodes[0].steps if step.number == 6)
    (target,) = step.actions
    assert target.action == Scroll(x=0.7792, y=0.4648, direction="down", amount=3)
    assert target.boxes == ((0.0, 0.19925, 1.0, 0.7562083333333334),)  # the moveTo's box


def test_sample_screenshots_and_instruction(sample_dir):
    episodes, _ = load_episodes([sample_dir / "s_a96285eb665bef92.json"])
    episode = episodes[0]
    assert episode.instruction.startswith("Upload a local pdf file")
    assert episode.steps[0].screenshot == sample_dir / "images" / "s_a96285eb665bef92_2.png"
    assert episode.steps[-1].actions[0].action == Done(status="success")


def test_write_then_press_kept_as_two_actions(tmp_path, helpers):
    helpers.write_agentnetbench(tmp_path, "t1", helpers.good_steps("t1"))
    episodes, errors = load_episodes([tmp_path])
    assert errors == []
    assert [target.action for target in episodes[0].steps[1].actions] == [Type(text="hello"), Key(keys=["enter"])]


def test_unreadable_json_reported(tmp_path, helpers):
    (tmp_path / "broken.json").write_text('{"task_id": "x", "steps": [')
    helpers.write_agentnetbench(tmp_path, "good", helpers.good_steps("good"))
    episodes, errors = load_episodes([tmp_path])
    assert [episode.trajectory_id for episode in episodes] == ["good"]
    assert len(errors) == 1
    assert errors[0].source == str(tmp_path / "broken.json")
    assert errors[0].step is None
    assert "invalid JSON" in errors[0].message


def test_missing_screenshot_reported_with_step(tmp_path, helpers):
    steps = helpers.good_steps("m")
    steps[1]["create"] = False
    steps[1]["step_num"] = 7
    helpers.write_agentnetbench(tmp_path, "m", steps)
    episodes, errors = load_episodes([tmp_path / "m.json"])
    assert episodes == []
    assert (errors[0].source, errors[0].step) == (str(tmp_path / "m.json"), 7)
    assert "m_2.png" in errors[0].message and "not found" in errors[0].message


def test_unknown_action_type_reported_with_step(tmp_path, helpers):
    steps = helpers.good_steps("u")
    steps[2]["ground_truth_actions"] = [{"type": "teleport", "params": {}, "metadata": {}}]
    helpers.write_agentnetbench(tmp_path, "u", steps)
    episodes, errors = load_episodes([tmp_path / "u.json"])
    assert episodes == []
    assert errors[0].step == 3
    assert "unknown action type 'teleport'" in errors[0].message


def test_invalid_coordinate_reported_with_step(tmp_path, helpers):
    steps = helpers.good_steps("c")
    steps[0]["ground_truth_actions"][0]["params"]["position"] = {"x": 1.5, "y": 0.5}
    helpers.write_agentnetbench(tmp_path, "c", steps)
    _, errors = load_episodes([tmp_path / "c.json"])
    assert errors[0].step == 1
    assert "x" in errors[0].message


def test_duplicate_trajectory_id_reported(tmp_path, helpers):
    helpers.write_agentnetbench(tmp_path / "one", "same", helpers.good_steps("a"))
    helpers.write_agentnetbench(tmp_path / "two", "same", helpers.good_steps("b"))
    episodes, errors = load_episodes([tmp_path])
    assert len(episodes) == 1
    assert "duplicate trajectory id 'same'" in errors[0].message


def test_missing_path_reported(tmp_path):
    episodes, errors = load_episodes([tmp_path / "nowhere"])
    assert episodes == []
    assert "not found" in errors[0].message


def test_step_without_ground_truth_uses_action_code(tmp_path, helpers):
    steps = helpers.good_steps("p")
    steps[0] = {"image": "p_1.png", "action": "pyautogui.moveTo(x=0.2, y=0.3)\npyautogui.scroll(-2)"}
    helpers.write_agentnetbench(tmp_path, "p", steps)
    episodes, errors = load_episodes([tmp_path / "p.json"])
    assert errors == []
    assert episodes[0].steps[0].actions[0].action == Scroll(x=0.2, y=0.3, direction="down", amount=2)


# OSWorld ----------------------------------------------------------------------------------------

def write_osworld(helpers, folder, lines, initial=True, size=(1280, 720)):
    folder.mkdir(parents=True, exist_ok=True)
    if initial:
        helpers.write_png(folder / "initial_state.png", size)
    for line in lines:
        if "screenshot_file" in line:
            helpers.write_png(folder / line["screenshot_file"], size, color=(line["step_num"] * 20, 0, 0))
    (folder / "traj.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


OSWORLD_LINES = [
    {"step_num": 1, "action_timestamp": "t1", "action": "import pyautogui; pyautogui.click(640, 360)",
     "reward": 0, "done": False, "info": {}, "screenshot_file": "step_1_t1.png"},
    {"step_num": 2, "action": "pyautogui.moveTo(128, 72)\npyautogui.dragTo(384, 216, button='left')",
     "screenshot_file": "step_2_a.png"},
    {"step_num": 2, "action": {"command": "pyautogui.write('hi')"}, "screenshot_file": "step_2_b.png"},
    {"step_num": 5, "action": "WAIT", "screenshot_file": "step_5.png"},
    {"step_num": 6, "action": "DONE", "screenshot_file": "step_6.png"},
]


def test_osworld_steps_and_pixel_coordinates(tmp_path, helpers):
    folder = write_osworld(helpers, tmp_path / "task-123", OSWORLD_LINES)
    (folder / "task-123.json").write_text(json.dumps({"id": "task-123", "instruction": "Open the menu"}))
    episodes, errors = load_episodes([folder])
    assert errors == []
    (episode,) = episodes
    assert (episode.trajectory_id, episode.format, episode.instruction) == ("task-123", FORMAT_OSWORLD, "Open the menu")
    assert [step.number for step in episode.steps] == [1, 2, 5, 6]
    actions = [[target.action for target in step.actions] for step in episode.steps]
    assert actions[0] == [Click(x=0.5, y=0.5)]
    assert actions[1] == [Drag(x=0.1, y=0.1, to_x=0.3, to_y=0.3), Type(text="hi")]
    assert actions[2] == [Wait(seconds=1.0)]
    assert actions[3] == [Done(status="success")]


def test_osworld_screenshot_is_the_one_before_the_action(tmp_path, helpers):
    folder = write_osworld(helpers, tmp_path / "run", OSWORLD_LINES)
    (episode,), _ = load_episodes([folder / "traj.jsonl"])
    names = [step.screenshot.name for step in episode.steps]
    # Step 2 has two lines; the step after it starts from the last line's screenshot.
    assert names == ["initial_state.png", "step_1_t1.png", "step_2_b.png", "step_5.png"]


def test_osworld_without_initial_screenshot_drops_first_step(tmp_path, helpers):
    folder = write_osworld(helpers, tmp_path / "run", OSWORLD_LINES, initial=False)
    (episode,), errors = load_episodes([folder])
    assert errors == []
    assert [step.number for step in episode.steps] == [2, 5, 6]
    assert episode.steps[0].screenshot.name == "step_1_t1.png"


def test_osworld_missing_screenshot_reported(tmp_path, helpers):
    folder = write_osworld(helpers, tmp_path / "run", OSWORLD_LINES)
    (folder / "step_1_t1.png").unlink()
    episodes, errors = load_episodes([folder])
    assert episodes == []
    assert (errors[0].source, errors[0].step) == (str(folder / "traj.jsonl"), 1)


def test_osworld_unknown_action_reported(tmp_path, helpers):
    lines = [dict(line) for line in OSWORLD_LINES]
    lines[3]["action"] = {"action_type": "CLICK", "parameters": {"x": 3, "y": 4}}
    folder = write_osworld(helpers, tmp_path / "run", lines)
    _, errors = load_episodes([folder])
    assert errors[0].step == 5
    assert "unknown action type" in errors[0].message


def test_osworld_bad_json_line_reported(tmp_path, helpers):
    folder = write_osworld(helpers, tmp_path / "run", OSWORLD_LINES)
    with open(folder / "traj.jsonl", "a") as handle:
        handle.write("{oops\n")
    _, errors = load_episodes([folder])
    assert "invalid JSON on line 6" in errors[0].message


def test_pixels_to_fractions_forms():
    code = "pyautogui.click(x=960, y=270)\npyautogui.moveTo((480, 540))\npyautogui.scroll(-3, 192, 108)"
    converted = pixels_to_fractions(code, 1920, 1080)
    assert converted.splitlines() == [
        "pyautogui.click(x=0.5, y=0.25)", "pyautogui.moveTo((0.25, 0.5))", "pyautogui.scroll(-3, 0.1, 0.1)",
    ]


# Holdfast ---------------------------------------------------------------------------------------

def test_holdfast_folder_loads(tmp_path, helpers):
    folder = helpers.record_holdfast(tmp_path / "run-1", [
        ("click(0.500,0.500)", Click(x=0.5, y=0.5)),
        ("garbage", None),
        ("done(success)", Done()),
    ])
    (episode,), errors = load_episodes([tmp_path])
    assert errors == []
    assert (episode.trajectory_id, episode.format, episode.instruction) == ("run-1", FORMAT_HOLDFAST, "Press the button")
    # The unparsed step 1 is left out; numbers are the recorded indices.
    assert [step.number for step in episode.steps] == [0, 2]
    assert episode.steps[1].screenshot == folder / "step_0002.png"
    assert episode.steps[0].actions[0].action == Click(x=0.5, y=0.5)


def test_holdfast_missing_screenshot_reported(tmp_path, helpers):
    folder = helpers.record_holdfast(tmp_path / "run-2", [("move(0.100,0.100)", Move(x=0.1, y=0.1))])
    (folder / "step_0000.png").unlink()
    episodes, errors = load_episodes([folder])
    assert episodes == []
    assert "step_0000.png" in errors[0].message and "not found" in errors[0].message
