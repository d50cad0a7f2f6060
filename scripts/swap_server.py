"""``power serve`` as ``bench_swap.py`` drives it: one loaded model at most, a JSON log, and the
runners, with what a swap costs the machine (``/proc``); see that script for the method."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

# (the scripts that import this module put the repository root on sys.path)
from tests.support.server import runner_children

__all__ = ["CTX", "PROMPT", "THREADS", "Server", "cpu_busy"]

CTX, THREADS = 2048, 2
PROMPT = (
    "<|im_start|>user\nWrite a short story about a lighthouse keeper who finds a message in a "
    "bottle, in five paragraphs.<|im_end|>\n<|im_start|>assistant\n"
)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``power serve`` with one loaded model at most, its JSON log, and its runners."""

    def __init__(self, home: Path) -> None:
        self.port = _port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home / "server.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "A3S_"))}
        self.env.update(
            A3S_POWER_HOME=str(home),
            OLLAMA_MAX_LOADED_MODELS="1",
            OLLAMA_KEEP_ALIVE="-1",
            A3S_POWER_LOG_FORMAT="json",
            OLLAMA_HOST=f"127.0.0.1:{self.port}",  # (for `power create`)
        )
        self.http = httpx.Client(timeout=600)
        self.proc: subprocess.Popen[bytes] | None = None

    @contextmanager
    def running(self) -> Iterator[Server]:
        with self.log.open("wb") as out:
            argv = [sys.executable, "-m", "power", "serve", "--port", str(self.port)]
            self.proc = subprocess.Popen(argv, env=self.env, stdout=out, stderr=subprocess.STDOUT)
            try:
                for _ in range(600):
                    try:
                        self.http.head(self.url, timeout=1)
                        break
                    except httpx.HTTPError:
                        if self.proc.poll() is not None:
                            raise RuntimeError(f"power serve exited; see {self.log}") from None
                        time.sleep(0.1)
                yield self
            except BaseException:
                kept = Path(tempfile.gettempdir()) / f"bench-swap-server-{self.port}.log"
                kept.write_bytes(self.log.read_bytes())
                print(f"the daemon's log: {kept}", file=sys.stderr)  # noqa: T201
                raise
            finally:
                self.http.close()
                self.proc.terminate()  # (the gateway stops its runners: they are its children)
                try:
                    self.proc.wait(60)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()

    def create(self, name: str, gguf: Path) -> None:
        modelfile = gguf.parent / f"Modelfile.{name}"
        modelfile.write_text(f"FROM {gguf}\n")
        try:
            argv = [sys.executable, "-m", "power", "create", name, "-f", str(modelfile)]
            done = subprocess.run(argv, env=self.env, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"power create {name}: {done.stderr.strip()}")
        finally:
            modelfile.unlink()

    def blob(self, name: str) -> Path:
        """The GGUF the runner maps for ``name`` (the ``FROM`` line ``/api/show`` gives)."""
        show = self.http.post(f"{self.url}/api/show", json={"model": name}).json()
        line = next(x for x in show["modelfile"].splitlines() if x.startswith("FROM /"))
        return Path(line.removeprefix("FROM "))

    def runners(self) -> list[psutil.Process]:
        assert self.proc is not None
        return runner_children(self.proc.pid)  # (not its chat-template workers)

    def loaded_pid(self) -> int:
        models = self.http.get(f"{self.url}/api/ps").json()["models"]
        return int(models[0]["pid"]) if models else 0

    def wait_spare(self, timeout_s: float = 120.0) -> None:
        """Until the gateway's spare runner is launched and idle (waiting for its ``Load``)."""
        loaded = self.loaded_pid()
        deadline = time.monotonic() + timeout_s
        last: tuple[int, float] | None = None
        while time.monotonic() < deadline:
            spare = [p for p in self.runners() if p.pid != loaded]
            if len(spare) == 1:
                try:
                    times = spare[0].cpu_times()
                except psutil.Error:
                    continue
                now = (spare[0].pid, times.user + times.system)
                if now == last:
                    return
                last = now
            time.sleep(0.3)
        raise RuntimeError("the gateway's spare runner did not settle")

    def swap(self, model: str) -> dict[str, Any]:
        """One streamed 1-token request; the client's time to the first token, and the
        response's own durations."""
        before = {p.pid for p in self.runners()}
        body = {
            "model": model,
            "prompt": PROMPT,
            "raw": True,
            "stream": True,
            "options": {"temperature": 0, "num_predict": 1, "num_ctx": CTX, "num_thread": THREADS},
        }
        busy = cpu_busy()
        sent_wall, start = time.time(), time.perf_counter()
        first = first_wall = 0.0
        done: dict[str, Any] = {}
        with self.http.stream("POST", f"{self.url}/api/generate", json=body) as resp:
            resp.raise_for_status()
            for line in resp.iter_lines():
                msg = json.loads(line)
                if msg.get("response") and not first:
                    first, first_wall = time.perf_counter(), time.time()
                if msg.get("done"):
                    done = msg
        if not first:
            raise RuntimeError(f"no token from {model}: {done}")
        pid = self.loaded_pid()
        faults, read = _io_of(pid)
        cpu = psutil.Process(pid).cpu_times()
        return {
            "machine_busy": busy(),  # the whole machine's CPU use during the swap, 0..1
            "runner_cpu_s": cpu.user + cpu.system,
            "major_faults": faults,  # the new runner's, loading and answering (Linux /proc)
            "read_mb": read / 1e6,  # what it read from the disk (its readahead included)
            "ttft": first - start,
            "sent_wall": sent_wall,
            "first_wall": first_wall,
            "pid": pid,
            "spare_used": pid in before,
            "load_duration": done.get("load_duration", 0) / 1e9,
            "prompt_eval_duration": done.get("prompt_eval_duration", 0) / 1e9,
        }

    def breakdown(self, swap: dict[str, Any], model: str) -> dict[str, float]:
        """Where the swap's time went, from the daemon's log lines about the runners."""
        unloaded = loading = ready = 0.0
        load_s = 0.0
        pid = swap["pid"]
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            msg = str(rec.get("message", ""))
            at = datetime.fromisoformat(rec["time"]).timestamp()
            if at < swap["sent_wall"] - 0.002:  # (the log's times are to the millisecond)
                continue
            if msg.startswith("runner unloaded:") and not unloaded:
                unloaded = at
            elif msg.startswith("runner loading:") and f" pid={pid}" in msg:
                loading = at
            elif msg.startswith("runner ready:") and f" pid={pid} " in msg:
                ready = at
                load_s = float(msg.split(" load=")[1].split("s ")[0])
        if not (unloaded and loading and ready):
            raise RuntimeError(f"swap to {model}: runner lines missing from the daemon's log")
        return {
            "to_load_s": loading - swap["sent_wall"],  # request in, old runner told, spare taken
            "load_s": load_s,  # the runner's Load to Ready
            "first_token_s": swap["first_wall"] - ready,  # prompt, first token, to the client
            "old_exit_s": unloaded - swap["sent_wall"],  # until the evicted runner had exited
        }


def cpu_busy() -> Callable[[], float]:
    """A function that says how busy every CPU was, 0..1, since this was called."""
    before = psutil.cpu_times()

    def since() -> float:
        after = psutil.cpu_times()
        idle = (after.idle + after.iowait) - (before.idle + before.iowait)
        total = sum(after) - sum(before)
        return 1.0 - idle / total if total > 0 else 0.0

    return since


def _io_of(pid: int) -> tuple[int, int]:
    """A process's major page faults and the bytes it caused to be read from the disk."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return int(stat[9]), int(io["read_bytes"])
