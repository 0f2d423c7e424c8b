"""Scripted expert for MiniWoB++ tasks: reads the DOM and the task fields, acts in Holdfast actions.

The expert is a `agent.policy.Policy`, so demonstrations and evaluation run through the same
episode loop as a model. At the first `predict` of an episode it reads the page (core.getDOMInfo
and the fields the `miniwob` package extracts from the instruction) and plans the whole episode:
every listed task's layout stays fixed until the final action ends the episode. Each planned
click targets a point where the element is not covered by another one (see
`PracticeEnv.clickable_point`), mapped to screen coordinates through the calibrated mapping.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable

from miniwob.dom import DOMElement
from PIL import Image

from agent.actions import Action, Click, Done, Type, format_action

if TYPE_CHECKING:
    from agent.screen import ScreenGeometry
    from tools.practice_env import PageMapping, PracticeEnv

logger = logging.getLogger(__name__)


class ExpertError(RuntimeError):
    """The expert cannot find what the instruction refers to; the message names task and target."""


# A plan step: click an element, or type text (into whatever has focus).
PlanStep = tuple[str, "DOMElement | str"]
Planner = Callable[[DOMElement, dict[str, str]], list[PlanStep]]


def _elements(root: DOMElement, tag: str | None = None, **attributes: str) -> list[DOMElement]:
    found = []
    for element in root.subtree_elements:
        if tag is not None and element.tag != tag:
            continue
        if all(getattr(element, name) == value for name, value in attributes.items()):
            found.append(element)
    return found


def _one(root: DOMElement, what: str, tag: str | None = None, **attributes: str) -> DOMElement:
    found = _elements(root, tag, **attributes)
    if not found:
        raise ExpertError(f"no {what} ({tag or 'any tag'} with {attributes}) on the page")
    return found[0]


def _input_with_label(root: DOMElement, label: str, input_tag: str) -> DOMElement:
    """Return the input inside the <label> whose text is `label` (click-option, click-checkboxes)."""
    for element in _elements(root, "label"):
        inputs = [child for child in element.children if child.tag == input_tag]
        text = " ".join(child.text or "" for child in element.children if child.tag == "t") or element.text
        if inputs and (text or "").strip() == label:
            return inputs[0]
    raise ExpertError(f"no {input_tag} labelled {label!r} on the page")


def _click_by_id(*ids: str) -> Planner:
    def plan(root: DOMElement, fields: dict[str, str]) -> list[PlanStep]:
        return [("click", _one(root, f"element #{element_id}", id=element_id)) for element_id in ids]

    return plan


def _plan_button_with_text(root: DOMElement, fields: dict[str, str]) -> list[PlanStep]:
    return [("click", _one(root, "target button", "button", text=fields["target"]))]


def _plan_click_link(root: DOMElement, fields: dict[str, str]) -> list[PlanStep]:
    links = [element for element in _elements(root, "span", text=fields["target"]) if "alink" in element.classes]
    if not links:
        raise ExpertError(f"no link {fields['target']!r} on the page")
    return [("click", links[0])]


def _plan_click_dialog(root: DOMElement, fields: dict[str, str]) -> list[PlanStep]:
    close = [element for element in _elements(root, "button") if "ui-dialog-titlebar-close" in element.classes]
    if not close:
        raise ExpertError("no dialog close button on the page")
    return [("click", close[0])]


def _plan_click_dialog_2(root: DOMElement, fields: dict[str, str]) -> list[PlanStep]:
    if fields["target"] == "x":
        return _plan_click_dialog(root, fields)
    return [("click", _one(root, "dialog button", "button", text=fields["target"]))]


def _plan_click_tab(root: DOMElement, fields: dict[str, str]) -> list[PlanStep]:
    return [("click", _one(root, "tab", "a", text=f"Tab #{fields['target']}"))]


def _plan_click_option(root: DOMElement, fields: dict[str, str]) -> list[PlanStep]:
    radio = _input_with_label(root, fields["target"], "input_radio")
    return [("click", radio), ("click", _one(root, "submit button", id="subbtn"))]


def _plan_click_checkboxes(root: DOMElement, fields: dict[str, str]) -> list[PlanStep]:
    targets = [value for key, value in fields.items() if key.startswith("target ")]
    steps: list[PlanStep] = [("click", _input_with_label(root, target, "input_checkbox")) for target in targets]
    return steps + [("click", _one(root, "submit button", id="subbtn"))]


def _plan_focus_text_2(root: DOMElement, fields: dict[str, str]) -> list[PlanStep]:
    return [("click", _one(root, "text box", id=f"tt{int(fields['target'])}"))]


def _plan_enter_text(root: DOMElement, fields: dict[str, str]) -> list[PlanStep]:
    return [("click", _one(root, "text field", id="tt")), ("type", fields["target"]), ("click", _one(root, "submit", id="subbtn"))]


def _plan_enter_text_2(root: DOMElement, fields: dict[str, str]) -> list[PlanStep]:
    text = fields["text"].upper() if fields["case"] == "upper" else fields["text"].lower()
    return [("click", _one(root, "text field", id="tt")), ("type", text), ("click", _one(root, "submit", id="subbtn"))]


def _plan_enter_password(root: DOMElement, fields: dict[str, str]) -> list[PlanStep]:
    password = fields["target"]
    return [
        ("click", _one(root, "password field", id="password")),
        ("type", password),
        ("click", _one(root, "verify field", id="verify")),
        ("type", password),
        ("click", _one(root, "submit", id="subbtn")),
    ]


def _plan_login_user(root: DOMElement, fields: dict[str, str]) -> list[PlanStep]:
    return [
        ("click", _one(root, "username field", id="username")),
        ("type", fields["username"]),
        ("click", _one(root, "password field", id="password")),
        ("type", fields["password"]),
        ("click", _one(root, "login button", id="subbtn")),
    ]


PLANNERS: dict[str, Planner] = {
    "click-test": _click_by_id("subbtn"),
    "click-test-2": _plan_button_with_text,
    "click-button": _plan_button_with_text,
    "click-button-sequence": _click_by_id("subbtn", "subbtn2"),
    "click-link": _plan_click_link,
    "click-dialog": _plan_click_dialog,
    "click-dialog-2": _plan_click_dialog_2,
    "click-tab": _plan_click_tab,
    "click-option": _plan_click_option,
    "click-checkboxes": _plan_click_checkboxes,
    "focus-text": _click_by_id("tt"),
    "focus-text-2": _plan_focus_text_2,
    "enter-text": _plan_enter_text,
    "enter-text-2": _plan_enter_text_2,
    "enter-password": _plan_enter_password,
    "login-user": _plan_login_user,
}


def _plan_remember_code(root: DOMElement, fields: dict[str, str], memory: dict[str, str]) -> list[PlanStep]:
    """Plan the current page of remember-code (a Holdfast task): read the code while it is
    shown, page on with Next, and type the remembered code into the final form."""
    shown = _elements(root, id="code")
    if shown:
        memory["code"] = (shown[0].text or "").strip()
    submit = _elements(root, id="subbtn")
    if not submit:
        return [("click", _one(root, "Next button", id="next"))]
    if "code" not in memory:
        raise ExpertError("remember-code: the form is shown but the code was never seen")
    return [("click", _one(root, "code field", id="tt")), ("type", memory["code"]), ("click", submit[0])]


def _plan_remember_box(root: DOMElement, fields: dict[str, str], memory: dict[str, str]) -> list[PlanStep]:
    """Plan the current page of remember-box (a Holdfast task): note which box is marked while
    the mark is shown, page on with Next, and click that box when the unmarked grid returns."""
    marked = [element for element in _elements(root) if "marked" in (element.classes or "").split()]
    if marked:
        memory["box"] = marked[0].id
    nexts = _elements(root, id="next")
    if nexts:
        return [("click", nexts[0])]
    if "box" not in memory:
        raise ExpertError("remember-box: the grid returned but the marked box was never seen")
    return [("click", _one(root, "remembered box", id=memory["box"]))]


# Tasks whose page changes after actions: the expert plans one page at a time, and `memory`
# keeps what it read on earlier pages for the rest of the episode.
PagedPlanner = Callable[[DOMElement, dict[str, str], dict[str, str]], list[PlanStep]]
PAGED_PLANNERS: dict[str, PagedPlanner] = {
    "remember-code": _plan_remember_code,
    "remember-box": _plan_remember_box,
    "remember-box-1": _plan_remember_box,
    "remember-box-2": _plan_remember_box,
}
EXPERT_TASKS = tuple(PLANNERS) + tuple(PAGED_PLANNERS)


class ExpertPolicy:
    """Scripted MiniWoB++ expert behind the `agent.policy.Policy` interface.

    It ignores the screenshots: its plan comes from the page's DOM through `env`, and its clicks
    go through `mapping` (page to screenshot pixels) and `geometry` (screenshot pixels to action
    coordinates). When the plan runs out before the task ends, it returns done(failure).
    """

    name = "expert"

    def __init__(self, env: PracticeEnv, mapping: PageMapping, geometry: ScreenGeometry) -> None:
        self.env = env
        self.mapping = mapping
        self.geometry = geometry
        self._plan: list[Action] | None = None
        self._memory: dict[str, str] = {}

    def start(self, instruction: str) -> None:
        task = self.env.task
        if task not in EXPERT_TASKS:
            raise ExpertError(f"the expert has no script for task {task!r}; it knows {', '.join(EXPERT_TASKS)}")
        self._plan = None
        self._memory = {}

    def observe(self, screenshot: Image.Image) -> None:
        """Ignore the screenshot: the expert reads the DOM."""

    def predict(self, *, commit: bool = True) -> str:
        if self._plan is None or (not self._plan and self.env.task in PAGED_PLANNERS):
            try:
                self._plan = self.plan()
            except ExpertError as error:
                # Some seeds place the target where no click can reach it. That one episode
                # fails, so a long recording goes on with the next seed instead of stopping.
                logger.warning("expert cannot solve this episode, which counts as a failure: %s", error)
                self._plan = []
        if not self._plan:
            return format_action(Done(status="failure"))
        return format_action(self._plan[0] if not commit else self._plan.pop(0))

    def feed_action(self, action_text: str) -> None:
        """Ignore the action: the expert's plan does not depend on the actions taken."""

    def state_bytes(self) -> int:
        return 0

    def plan(self) -> list[Action]:
        """Read the page and return the episode's actions."""
        task = self.env.task
        root = self.env.dom()
        if task in PAGED_PLANNERS:
            steps = PAGED_PLANNERS[task](root, dict(self.env.fields), self._memory)
        else:
            steps = PLANNERS[task](root, dict(self.env.fields))
        actions: list[Action] = []
        for kind, target in steps:
            if kind == "type":
                actions.append(Type(text=str(target)))
                continue
            point = self.env.clickable_point(target)
            if point is None:
                raise ExpertError(f"{task}: element {target!r} has no visible point inside the task area")
            x, y = self.mapping.to_normalised(self.geometry, *point)
            actions.append(Click(x=x, y=y))
        logger.debug("%s plan: %s", task, [format_action(action) for action in actions])
        return actions
