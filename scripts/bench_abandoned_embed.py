"""Issue-11 figure: how long a 3-token chat waits behind an abandoned large embed batch.

    python scripts/bench_abandoned_embed.py [--inputs 3000] [--rounds 3] [--abandon-s 2]

``power serve`` with SmolLM2 (2 threads, ``OLLAMA_NUM_PARALLEL=1`` unless ``--parallel``). Each
round sends the chat alone (its own work), then an ``/api/embed`` of ``--inputs`` sentences
whose client closes its connection after ``--abandon-s`` seconds, and at that moment the same
chat: its wait is its time there less its time alone. Prints each round and the median.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from machine import Machine  # scripts/machine.py: the CPU and load a figure belongs to

CHAT = {
    "model": "smollm2",
    "messages": [{"role": "user", "content": "Hi"}],
    "stream": False,
    "options": {"temperature": 0, "num_predict": 3, "num_thread": 2},
}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _chat(url: str) -> float:
    started = time.perf_counter()
    resp = httpx.post(f"{url}/api/chat", json=CHAT, timeout=600)
    resp.raise_for_status()
    assert resp.json()["eval_count"] == 3, resp.text
    return time.perf_counter() - started


def _abandoned_embed(port: int, inputs: int, abandon_s: float) -> None:
    """Send the embed request, wait, and close the connection without reading the answer."""
    texts = [f"Sentence number {i} is about the sea and its waves." for i in range(inputs)]
    body = json.dumps({"model": "smollm2", "input": texts, "options": {"num_thread": 2}}).encode()
    head = (
        f"POST /api/embed HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head + body)
        time.sleep(abandon_s)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inputs", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--abandon-s", type=float, default=2.0)
    parser.add_argument("--parallel", type=int, default=1)
    args = parser.parse_args()
    machine = Machine.probe()
    port = _port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "A3S_POWER_"))}
        env |= {
            "A3S_POWER_HOME": home,
            "OLLAMA_MODELS": str(Path(home) / "models"),
            "OLLAMA_NUM_PARALLEL": str(args.parallel),
            "OLLAMA_KEEP_ALIVE": "-1",
        }
        log = Path(home) / "server.log"
        with log.open("wb") as out:
            server = subprocess.Popen(
                [sys.executable, "-m", "power", "serve", "--port", str(port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            for _ in range(300):
                try:
                    httpx.get(url, timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            _chat(url)  # load the model
            waits = []
            for n in range(args.rounds):
                alone = _chat(url)
                _abandoned_embed(port, args.inputs, args.abandon_s)
                behind = _chat(url)
                waits.append(behind - alone)
                print(  # noqa: T201
                    f"round {n + 1}: chat alone {alone:.3f} s, behind the abandoned embed of"
                    f" {args.inputs} inputs {behind:.3f} s: waited {behind - alone:.3f} s",
                    flush=True,
                )
            print(f"median wait {statistics.median(waits):.3f} s", flush=True)  # noqa: T201
            print(json.dumps({"waits_s": waits, "machine": machine.finish()}))  # noqa: T201
        finally:
            server.terminate()
            server.wait(60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
