"""A quiet start (``python -m runner --quiet-start``): the imports in the CPU's idle time.

The gateway launches its spare runners while models load and answer: beside a load that
follows another closely, or two seconds after a load (``power.supervisor.spare``). Most of a
start is importing numpy, llama-cpp-python and the runner (~0.3 s of CPU); those imports run
here on a thread of Linux's ``SCHED_IDLE`` policy, which runs only on a core that nothing else
wants and gives way at once to any other thread that wakes: a load leaves a core idle most of
the time, a decode on every core leaves almost none. Every other thread (the frame loop, the
inference thread, and llama.cpp's compute threads, which the inference thread starts) keeps the
process's own policy and priority.

The thread does not end with the imports: it sleeps until the process ends. A thread's end is
work too (glibc hands back its stack, holding the process's memory-map lock for a moment), and
on a busy machine an idle-policy thread gets to that work late; meanwhile the runner's other
threads would wait for the lock at their next mapping or page fault: the load's, say. A
sleeping thread holds nothing and takes no CPU.

Only Linux schedules a thread apart from its process, and no unprivileged process can leave
``SCHED_IDLE`` again; elsewhere the imports run as in a plain start, and the gateway does not
ask for a quiet one.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["import_quietly", "run_quietly"]


def import_quietly(argv: list[str]) -> None:
    """Import what ``python -m runner`` with ``argv`` will use, in the CPU's idle time.

    Nothing here reports a failure: the main thread imports the same modules again (at once,
    from ``sys.modules``, where they loaded) and says what failed, as it always does.
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--engine", default="llama")
    engine = parser.parse_known_args(argv)[0].engine

    def imports() -> None:
        try:
            from runner.main import import_engine

            import_engine(engine)
        except Exception:
            pass

    run_quietly(imports)


def run_quietly(work: Callable[[], None]) -> None:
    """Run ``work`` on a new ``SCHED_IDLE`` thread, which then sleeps for good, and wait for
    the work; on the calling thread, as it is, where a thread cannot be scheduled apart from
    its process."""
    if not sys.platform.startswith("linux"):  # (a policy of one thread: Linux only)
        work()
        return
    done = threading.Event()
    failed = threading.Event()

    def quietly() -> None:
        try:  # its name where ps, top and /proc show one: it is the runner's only idle thread
            Path("/proc/thread-self/comm").write_text("quiet-start")
        except OSError:
            pass
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # (this thread)
        except OSError:
            failed.set()
            done.set()
            return  # (a plain thread: its end is no one's wait)
        try:
            work()
        finally:
            done.set()
        _ASLEEP.wait()  # never set: see the module's docstring

    threading.Thread(target=quietly, name="quiet-start", daemon=True).start()
    done.wait()
    if failed.is_set():
        work()


_ASLEEP = threading.Event()
