"""Child processes that die with the process that started them (no Prefect here).

Prefect's API server (uvicorn) runs as a child of ``mlimpute run``/``serve``. A child does not
die with its parent by itself: after a ``kill -KILL`` of the CLI, or any exit that skips its
clean-up, the server would run on with no parent, for good. So the CLI starts it through this
module (this file run as a script with ``MODULE ARGS...``), with the read end of a pipe whose
write end only the parent holds. A thread here blocks on that pipe; when the parent dies the
kernel closes the write end, the read returns end-of-file, and this process stops itself
(SIGTERM, so uvicorn shuts down cleanly; ``_exit`` if it is still alive 10 s later). Portable
to any POSIX system and indifferent to how the parent died.
"""

from __future__ import annotations

import os
import runpy
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["guarded_popen", "release", "ENV_FD"]

ENV_FD = "MLIMPUTE_PARENT_PIPE_FD"
_write_ends: dict[int, int] = {}  # child pid → write end, held open while the parent lives


def guarded_popen(module: str, argv: Sequence[str], env: Mapping[str, str] | None = None,
                  **popen_kw: Any) -> subprocess.Popen:
    """Start ``python -m module *argv`` as a child that exits when this process dies."""
    read_end, write_end = os.pipe()  # both non-inheritable: no other child keeps it open
    try:
        proc = subprocess.Popen(
            # this file run as a script, not `-m mlimpute.pipeline.guard`: that would import
            # mlimpute and numpy, pandas, scipy with it (~4 s before the server even starts)
            [sys.executable, "-c", f"import runpy; runpy.run_path({__file__!r}, run_name='__main__')",
             module, *argv],
            env={**(os.environ if env is None else env), ENV_FD: str(read_end)},
            pass_fds=(read_end,), **popen_kw)
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    _write_ends[proc.pid] = write_end
    return proc


def release(proc: subprocess.Popen) -> None:
    """Forget a child that has been stopped (closes the parent's end of its pipe)."""
    fd = _write_ends.pop(proc.pid, None)
    if fd is not None:
        os.close(fd)


def _watch_parent(fd: int) -> None:
    try:
        while os.read(fd, 1):
            pass
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(10)
    os._exit(1)


def main(argv: Sequence[str]) -> None:
    fd = int(os.environ.pop(ENV_FD))
    threading.Thread(target=_watch_parent, args=(fd,), daemon=True, name="parent-watch").start()
    module, *rest = argv
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
