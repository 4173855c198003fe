"""Headless Chromium driven through the DevTools protocol, with Python's standard library only.

Debian's ``chromium`` (PITFALLS 11; playwright is not installed here) is started with
``--remote-debugging-pipe``: it reads protocol commands on file descriptor 3 and writes answers
on 4, each a JSON message ended by a NUL byte. Enough to open a page, click what a person would
click, and read what the page then says.
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any


def chromium() -> str | None:
    """Debian's Chromium, if it is installed."""
    return shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    )


_NAVIGATING = frozenset(
    {"Inspected target navigated or closed", "Execution context was destroyed."}
)
"""DevTools' answers to a question asked while the page was being replaced (seen after a click
on a link: the old page's context is gone before the new one exists)."""


class PageNavigating(Exception):
    """The page was being replaced when it was asked; ask again once the next one is there."""


class Browser:
    """One headless Chromium with one page; use as a context manager."""

    def __init__(self) -> None:
        binary = chromium()
        assert binary, "chromium is missing: run scripts/setup-test-tools as root"
        # Chromium's helper processes may still write to the profile as the browser ends.
        self._profile = tempfile.TemporaryDirectory(ignore_cleanup_errors=True)
        commands_read, self._commands = os.pipe()
        self._answers, answers_write = os.pipe()

        def wire_pipes() -> None:  # in the child: fd 3 reads commands, fd 4 writes answers
            # Copied out of the way first: either end may itself be fd 3 or 4.
            reads, writes = os.dup(commands_read), os.dup(answers_write)
            os.dup2(reads, 3)
            os.dup2(writes, 4)

        self._process = subprocess.Popen(
            [
                binary,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-pipe",
                f"--user-data-dir={self._profile.name}",
                "about:blank",
            ],
            # Not close_fds: it would close 3 and 4 after wire_pipes ran. Python's own file
            # descriptors are not inheritable, so only the two wired ones reach Chromium.
            close_fds=False,
            preexec_fn=wire_pipes,
            start_new_session=True,  # its helpers in one group, ended together below
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(commands_read)
        os.close(answers_write)
        self._next_id, self._buffer = 0, b""
        target = self._send("Target.createTarget", {"url": "about:blank"})["targetId"]
        attached = self._send("Target.attachToTarget", {"targetId": target, "flatten": True})
        self._session = attached["sessionId"]

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *_: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)  # the browser and every helper
        self._process.wait(timeout=30)
        os.close(self._commands)
        os.close(self._answers)
        self._profile.cleanup()

    def _send(self, method: str, params: dict[str, Any], session: str | None = None) -> Any:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._answers, 65536)
                assert chunk, "chromium closed its DevTools pipe"
                self._buffer += chunk
            raw, _, self._buffer = self._buffer.partition(b"\0")
            answer = json.loads(raw)
            if answer.get("id") == self._next_id:
                error = answer.get("error")
                if error and error.get("message") in _NAVIGATING:
                    raise PageNavigating(error["message"])
                assert error is None, error
                return answer["result"]

    def open(self, url: str) -> None:
        """Load ``url`` in the page."""
        self._send("Page.navigate", {"url": url}, self._session)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = self._send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}, self._session
        )
        return result["result"].get("value")

    def wait_for(self, expression: str, within: float = 30.0) -> Any:
        """The first truthy value of ``expression``, asked until ``within`` seconds passed."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except PageNavigating:  # a click just left the page: ask the next one
                value = None
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"never true in the page: {expression}")
