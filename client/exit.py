"""Leaving a process that used the Temporal SDK, with its real exit status.

The SDK's native runtime can abort (exit 134) or hang while the interpreter shuts down
(sdk-python issue #300). Once all work is done, flush and leave with ``os._exit``.
"""

import contextlib
import logging
import os
import sys
from typing import NoReturn


def exit_now(status: int) -> NoReturn:
    """Flush everything written so far and end the process with ``status``."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)
