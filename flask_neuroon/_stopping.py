"""Stop a long-running loop on SIGTERM or Ctrl-C, safely.

A signal handler runs in the main thread between two bytecodes, possibly while that
thread is inside ``threading.Event.wait()`` and holds the event's internal lock; a
handler that calls ``event.set()`` then waits for that lock forever (the process hangs
on SIGTERM until SIGKILL). So the handler here only sets a flag, and waiting is done in
short sleeps that look at it.
"""

from __future__ import annotations

import contextlib
import signal
import time
import types
from collections.abc import Iterator

_STEP = 0.1


class StopRequest:
    """A flag that signal handlers set; ``wait(seconds)`` returns early once it is set."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: types.FrameType | None) -> None:
        self.requested = True

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when a stop was requested (now or before)."""
        deadline = time.monotonic() + max(seconds, 0.0)
        while not self.requested:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(_STEP, left))
        return self.requested

    @contextlib.contextmanager
    def on(self, *signums: int) -> Iterator[StopRequest]:
        """Install this flag as the handler of ``signums`` (main thread only), restoring
        the previous handlers afterwards."""
        previous = {signum: signal.signal(signum, self) for signum in signums}
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
