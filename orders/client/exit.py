"""Leaving a process that used the Temporal SDK, with its real exit status.

The SDK's native runtime can abort (exit 134) or hang while the interpreter shuts down
(sdk-python issue #300). Once all work is done, flush and leave with ``os._exit``.
"""

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Coroutine
from typing import Any, NoReturn


def exit_now(status: int) -> NoReturn:
    """Flush everything written so far and end the process with ``status``."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


def run_to_exit(main: Coroutine[Any, Any, int]) -> NoReturn:
    """Run a command's ``main`` and leave with its status (a benchmark's, a demo's).

    Ctrl-C is 130; anything that stopped the run is said in one line and is 2.
    """
    try:
        status = asyncio.run(main)
    except KeyboardInterrupt:
        status = 130
    except Exception as err:  # a run that could not finish: say why, leave non-zero
        print(f"error: {err!r}", file=sys.stderr)
        status = 2
    exit_now(status)
