"""Subprocess for the practice tests: calibrate, click outside every element, click a wrong button.

pyautogui binds to the DISPLAY of its first import, and other test modules import it for their
own Xvfb, so real input on the practice desktop runs in this separate process. It prints one
JSON object with what it measured.

Usage: python practice_probe.py RUNTIME_DIR
"""

from __future__ import annotations

import json
import sys
import time

from tools.practice_desktop import read_state, runtime_dir
from tools.practice_run import PracticeSession

SHORT_EPISODE_SECONDS = 3.0  # long enough for one click, short enough to wait for the timeout


def _point_outside_elements(session: PracticeSession) -> tuple[float, float]:
    """Return a page point in the task's work area that no element except the containers covers."""
    containers = {"body", "wrap", "area", "click-canvas"}
    leaves = [
        element
        for element in session.env.dom().subtree_elements
        if element.tag not in ("body",) and element.id not in containers
    ]
    for y in range(200, 60, -4):
        for x in range(150, 5, -4):
            if not any(e.left - 2 <= x <= e.right + 2 and e.top - 2 <= y <= e.bottom + 2 for e in leaves):
                return float(x), float(y)
    raise RuntimeError("no empty point found in the task area")


def main() -> None:
    from agent.actions import Click

    state = read_state(runtime_dir(sys.argv[1]))
    session = PracticeSession(state, episode_seconds=SHORT_EPISODE_SECONDS)
    report = {}
    try:
        mapping = session.calibrate("click-button")
        report["mapping"] = vars(mapping)

        # A click on empty space: the task must neither end nor pay; then it times out.
        session.env.reset("click-button", 1_000_123)
        page_x, page_y = _point_outside_elements(session)
        x, y = mapping.to_normalised(session.geometry, page_x, page_y)
        session.executor.execute(Click(x=x, y=y))
        after_click = session.env.wait_for_input()
        deadline = time.monotonic() + SHORT_EPISODE_SECONDS + 5
        final = session.env.status()
        while not final.done and time.monotonic() < deadline:
            time.sleep(0.1)
            final = session.env.status()
        report["empty_click"] = {"point": [page_x, page_y], "after_click": vars(after_click), "final": vars(final)}

        # A click on the wrong button of click-test-2 ends the episode with a negative reward.
        session.env.reset("click-test-2", 1_000_123)
        target = dict(session.env.fields)["target"]
        wrong = next(e for e in session.env.dom().subtree_elements if e.tag == "button" and e.text != target)
        point = session.env.clickable_point(wrong)
        x, y = mapping.to_normalised(session.geometry, *point)
        session.executor.execute(Click(x=x, y=y))
        report["wrong_button"] = vars(session.env.wait_for_input())
    finally:
        session.close()
    print(json.dumps(report, default=str))


if __name__ == "__main__":
    main()
