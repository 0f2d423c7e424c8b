"""A small real Tk window for the desktop tests, run as a subprocess.

Widgets: a button that counts its clicks, a text field (Return counts submissions), a
checkbox, and a 100-line list for scrolling, plus a magenta block the capture test looks for.
It reads commands from stdin, one per line, and answers each with one JSON line on stdout:
`state` returns the widget values and their screen rectangles; `quit` exits.

Run: python tests/agent/tk_app.py  (the window sits at +LEFT+TOP given by --left/--top).
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import tkinter as tk

MARKER_COLOR = "#ff00ff"
POLL_MS = 20  # how often the Tk thread looks for commands from stdin


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--left", type=int, default=100)
    parser.add_argument("--top", type=int, default=80)
    args = parser.parse_args()

    root = tk.Tk()
    root.title("holdfast test window")
    root.geometry(f"420x420+{args.left}+{args.top}")
    clicks = tk.IntVar(value=0)
    submitted = tk.IntVar(value=0)
    checked = tk.BooleanVar(value=False)

    button = tk.Button(root, text="Press me", width=12, command=lambda: clicks.set(clicks.get() + 1))
    button.place(x=20, y=20, width=160, height=40)
    entry = tk.Entry(root)
    entry.place(x=20, y=80, width=300, height=30)
    entry.bind("<Return>", lambda _event: submitted.set(submitted.get() + 1))
    checkbox = tk.Checkbutton(root, text="Agree", variable=checked)
    checkbox.place(x=20, y=130, width=120, height=30)
    marker = tk.Frame(root, background=MARKER_COLOR)
    marker.place(x=220, y=20, width=100, height=40)
    listbox = tk.Listbox(root)
    for number in range(100):
        listbox.insert("end", f"line {number}")
    listbox.place(x=20, y=180, width=300, height=200)

    def rectangle(widget: tk.Widget) -> list[int]:
        return [widget.winfo_rootx(), widget.winfo_rooty(), widget.winfo_width(), widget.winfo_height()]

    def state() -> dict[str, object]:
        return {
            "clicks": clicks.get(),
            "text": entry.get(),
            "submitted": submitted.get(),
            "checked": checked.get(),
            "scroll_top": listbox.yview()[0],
            "widgets": {
                "button": rectangle(button),
                "entry": rectangle(entry),
                "checkbox": rectangle(checkbox),
                "marker": rectangle(marker),
                "list": rectangle(listbox),
            },
        }

    commands: queue.Queue[str] = queue.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            commands.put(line.strip())
        commands.put("quit")

    def poll() -> None:
        while not commands.empty():
            command = commands.get()
            if command == "quit":
                root.destroy()
                return
            if command == "state":
                print(json.dumps(state()), flush=True)
            else:
                print(json.dumps({"error": f"unknown command {command!r}"}), flush=True)
        root.after(POLL_MS, poll)

    threading.Thread(target=read_stdin, daemon=True).start()
    root.update()
    print(json.dumps({"ready": True}), flush=True)
    root.after(POLL_MS, poll)
    root.mainloop()


if __name__ == "__main__":
    main()
