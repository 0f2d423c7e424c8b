"""The output folder of an evaluation run, written as results come, and resuming it.

    results.json  aggregates, per action type and per trajectory, errors, configuration, seed,
                  code version, dates and machine; rewritten after every trajectory
    steps.jsonl   one line per scored step, appended and flushed as each step is scored
    report.md     the same aggregates as a readable report, rewritten with results.json

A trajectory counts as finished once it is listed under `per_trajectory` in results.json.
`--resume` keeps the step lines of finished trajectories, drops the lines of a trajectory that
was interrupted, and replays everything else.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eval.datasets import LoadError
from eval.metrics import aggregate
from eval.provenance import code_version, machine_info, now_iso

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
STEPS_FILE = "steps.jsonl"
REPORT_FILE = "report.md"
# Configuration fields that must match for --resume to continue a run; the trajectory paths
# may differ, so a resumed run can add trajectories.
RESUME_KEYS = ("policy", "model", "predictions", "seed")


class ResumeError(ValueError):
    """The output folder contains a run that cannot be continued (or must not be overwritten)."""


class RunResults:
    """Collects step records and errors and keeps the output folder (if any) up to date."""

    def __init__(self, out_dir: str | Path | None, configuration: dict[str, Any], resume: bool = False) -> None:
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.configuration = configuration
        self.records: list[dict[str, Any]] = []
        self.finished: list[str] = []
        self.errors: list[LoadError] = []
        self.started_at = now_iso()
        self.machine = machine_info()
        self.code_version = code_version()
        self._steps_file = None
        if self.out_dir is None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        existing = (self.out_dir / RESULTS_FILE).exists() or (self.out_dir / STEPS_FILE).exists()
        if existing and not resume:
            raise ResumeError(
                f"{self.out_dir} already contains an evaluation run; pass --resume to continue it "
                "or choose another --out folder"
            )
        if existing:
            self._load_previous()
        # Nothing is written before the first result, so a run that fails to start (a model that
        # does not load) leaves the folder as it was.

    # Resume --------------------------------------------------------------------------------

    def _load_previous(self) -> None:
        assert self.out_dir is not None
        results_path = self.out_dir / RESULTS_FILE
        previous: dict[str, Any] = {}
        if results_path.exists():
            try:
                previous = json.loads(results_path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
                raise ResumeError(f"cannot resume: {results_path} is unreadable ({error}); choose another --out folder") from error
        old_configuration = previous.get("configuration", {})
        for key in RESUME_KEYS:
            if key in old_configuration and old_configuration[key] != self.configuration.get(key):
                raise ResumeError(
                    f"cannot resume {self.out_dir}: it was run with {key}={old_configuration[key]!r}, "
                    f"this run has {key}={self.configuration.get(key)!r}; use the same options or another --out folder"
                )
        finished = set(previous.get("per_trajectory", {}))
        self.started_at = previous.get("started_at", self.started_at)

        kept, dropped = [], 0
        steps_path = self.out_dir / STEPS_FILE
        if steps_path.exists():
            for number, line in enumerate(steps_path.read_text(encoding="utf-8").splitlines(), start=1):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    # A run killed while appending leaves a cut-off last line.
                    logger.warning("%s line %d is incomplete; dropping it", steps_path, number)
                    continue
                if record.get("trajectory_id") in finished:
                    kept.append(record)
                else:
                    dropped += 1
        self.records = kept
        self.finished = [trajectory_id for trajectory_id in previous.get("per_trajectory", {})]
        logger.info("resuming %s: %d finished trajectories kept, %d step lines of unfinished ones dropped",
                    self.out_dir, len(self.finished), dropped)

    def is_finished(self, trajectory_id: str) -> bool:
        return trajectory_id in self.finished

    # Recording -----------------------------------------------------------------------------

    def _open_steps(self) -> None:
        """Rewrite steps.jsonl with the finished trajectories' records and open it for appending."""
        if self.out_dir is not None and self._steps_file is None:
            self._rewrite_steps()
            self._steps_file = open(self.out_dir / STEPS_FILE, "a", encoding="utf-8")

    def add_step(self, record: dict[str, Any]) -> None:
        """Append one step line to steps.jsonl at once (records are kept until the trajectory ends)."""
        self._open_steps()
        if self._steps_file is not None:
            self._steps_file.write(json.dumps(record, ensure_ascii=False) + "\n")
            self._steps_file.flush()

    def finish_trajectory(self, trajectory_id: str, records: Sequence[dict[str, Any]]) -> None:
        self.records.extend(records)
        self.finished.append(trajectory_id)
        self.write_summary()

    def add_error(self, error: LoadError, trajectory_id: str | None = None) -> None:
        """Record a skipped trajectory; its step lines, if any were written, are removed."""
        self.errors.append(error)
        if trajectory_id is not None and self._steps_file is not None:
            # Closing makes write_summary rewrite steps.jsonl from the finished records only.
            self._steps_file.close()
            self._steps_file = None
        self.write_summary()

    def _rewrite_steps(self) -> None:
        """Rewrite steps.jsonl with the records of finished trajectories only."""
        assert self.out_dir is not None
        text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in self.records)
        _write_atomically(self.out_dir / STEPS_FILE, text)

    # Summary -------------------------------------------------------------------------------

    def summary(self, complete: bool = False) -> dict[str, Any]:
        """Return the aggregates with errors, configuration and provenance (results.json)."""
        metrics = aggregate(self.records)
        return {
            **metrics,
            "errors": [error.to_dict() for error in self.errors],
            "complete": complete,
            "configuration": self.configuration,
            "seed": self.configuration.get("seed"),
            "code_version": self.code_version,
            "started_at": self.started_at,
            "date": now_iso(),
            "machine": self.machine,
        }

    def write_summary(self, complete: bool = False) -> dict[str, Any]:
        summary = self.summary(complete)
        if self.out_dir is not None:
            if self._steps_file is None:
                # No trajectory is in progress, so the finished records are the whole file.
                self._rewrite_steps()
            _write_atomically(self.out_dir / RESULTS_FILE, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
            _write_atomically(self.out_dir / REPORT_FILE, render_report(summary))
        return summary

    def close(self, complete: bool = True) -> dict[str, Any]:
        if self._steps_file is not None:
            self._steps_file.close()
            self._steps_file = None
        return self.write_summary(complete)


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def _number(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render_report(summary: dict[str, Any]) -> str:
    """Render results.json as Markdown tables."""
    configuration = summary["configuration"]
    latency = summary.get("latency_s") or {}
    state = summary.get("state_bytes") or {}
    lines = [
        "# Offline replay evaluation",
        "",
        f"Policy `{configuration.get('policy')}`"
        + (f", model `{configuration.get('model')}`" if configuration.get("model") else "")
        + f", seed {summary.get('seed')}, code {summary['code_version']}, {summary['date']}"
        + ("" if summary.get("complete") else " (run not finished)"),
        "",
        "| metric | value |",
        "|---|---|",
        f"| trajectories | {summary['trajectories']} |",
        f"| steps | {summary['steps']} |",
        f"| step score mean | {_number(summary['step_score_mean'])} |",
        f"| step success rate | {_number(summary['step_success_rate'])} |",
        f"| episode success rate | {_number(summary['episode_success_rate'])} |",
        f"| AndroidControl click accuracy ({summary['android_control_clicks']} clicks) | "
        f"{_number(summary['android_control_click_accuracy'])} |",
        f"| latency per step, mean / p95 (s) | {_number(latency.get('mean'))} / {_number(latency.get('p95'))} |",
        f"| state bytes per step, mean / max | {_number(state.get('mean'), 0)} / {_number(state.get('max'), 0)} |",
        "",
        "## Per action type",
        "",
        "| type | actions | score mean | success rate |",
        "|---|---|---|---|",
    ]
    for kind, values in summary["per_action_type"].items():
        lines.append(f"| {kind} | {values['count']} | {_number(values['score_mean'])} | {_number(values['success_rate'])} |")
    lines += [
        "",
        "## Per trajectory",
        "",
        "| trajectory | steps | step score mean | step success rate | episode success | latency mean (s) | state bytes max |",
        "|---|---|---|---|---|---|---|",
    ]
    for trajectory_id, values in summary["per_trajectory"].items():
        lines.append(
            f"| {trajectory_id} | {values['steps']} | {_number(values['step_score_mean'])} | "
            f"{_number(values['step_success_rate'])} | {_number(values['episode_success'])} | "
            f"{_number(values['latency_s_mean'])} | {values['state_bytes_max']} |"
        )
    lines += ["", "## Errors", ""]
    if not summary["errors"]:
        lines.append("None.")
    for error in summary["errors"]:
        where = error["source"] if error["step"] is None else f"{error['source']} step {error['step']}"
        lines.append(f"- {where}: {error['message']}")
    return "\n".join(lines) + "\n"
