"""Issue-17 item 6: the GPU figures, on a machine with an NVIDIA GPU and a CUDA build of
llama-cpp-python (``scripts/gpu_device.sh`` builds one and runs this on a lent device).

    python scripts/bench_gpu.py --model M.gguf [--rounds 5] [--tokens 256] [--threads N]
        [--out docs/bench-gpu.json]

Measured side by side on one GGUF, every layer on the GPU (the gateway places the model by
itself, as it would for a user; the figures say where it put it):

1. Decode tokens/s, client-observed from first to last chunk, through ``power serve``
   (``OLLAMA_NUM_PARALLEL=1``) against an in-process ``llama_cpp.Llama(n_gpu_layers=-1)`` on
   the same file, interleaved (A B, then B A), the ratio of each round. Target ≥ 0.95.
   The warm time to first token of both, the gateway's in parts: its response's headers (sent
   with the first token) and the runner's own ``prompt_eval_duration``
   (``scripts/ttft_probe.py`` takes the runner's engine apart further, in one process).
2. The aggregate rate of 4 concurrent streams against 1 stream through ``power serve`` with
   ``OLLAMA_NUM_PARALLEL=4``, in mirrored order. Target ≥ 2.
3. The gateway's CPU per streamed token in both (its own process, from psutil): at GPU pace a
   token takes ~1.5 ms, so the gateway's share of it must stay in the tens of microseconds.
4. ``size_vram`` of ``/api/ps`` against what ``nvidia-smi`` reports for the runner's pid, after
   the first answer and again after all the rounds (``/api/ps`` asks the driver at most every
   ``VRAM_REFRESH_S``).
5. After the load and an answer, every thread of the runner is plain (``SCHED_OTHER``, nice 0):
   the spare runner's quiet start imports on an idle-policy thread, and the CUDA runtime's
   threads, started later, must not inherit it.

On a machine without a GPU it runs the same steps with the model on the CPU (the JSON says
``"gpu": false``), which is how the script itself is checked without a device.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from machine import Machine, publish  # scripts/machine.py: the CPU and load a figure belongs to
from swap_server import Server

from power.supervisor.placement import VRAM_REFRESH_S

MODEL = "gpubench"
CTX = 4096
PARALLEL = 4


def prompt(i: int) -> str:
    return (
        f"<|im_start|>user\nRequest {i}: write a long story about a lighthouse keeper who finds "
        "a message in a bottle, in ten paragraphs.<|im_end|>\n<|im_start|>assistant\n"
    )


# ---------------------------------------------------------------------- the two sides


def power_stream(srv: Server, text: str, tokens: int, threads: int) -> dict[str, float]:
    """One streamed greedy answer through the gateway: rate, TTFT, and the gateway's CPU."""
    body = {
        "model": MODEL,
        "prompt": text,
        "raw": True,
        "stream": True,
        "options": {"temperature": 0, "num_predict": tokens, "num_ctx": CTX, "num_thread": threads},
    }
    start = time.perf_counter()
    first = last = runner_prompt_s = 0.0
    count = 0
    # (the server's keep-alive client: a client made per request costs ~20-35 ms of TLS set-up,
    # which an earlier run of this script counted as the gateway's time to first token)
    with srv.http.stream("POST", f"{srv.url}/api/generate", json=body) as resp:
        resp.raise_for_status()
        headers = time.perf_counter()
        for line in resp.iter_lines():
            msg = json.loads(line)
            if msg.get("response"):
                last = time.perf_counter()
                first = first or last
            if msg.get("done"):
                count = int(msg["eval_count"])
                runner_prompt_s = msg.get("prompt_eval_duration", 0) / 1e9
    tps = (count - 1) / (last - first) if last > first else 0.0
    # the time to first token in parts: the response's headers, and the runner's own time from
    # taking the request to sampling its first token (its prompt_eval_duration)
    return {"ttft": first - start, "last": last - start, "tokens": count, "tps": tps,
            "headers": headers - start, "runner_prompt": runner_prompt_s}  # fmt: skip


def inproc_stream(llm: Any, text: str, tokens: int) -> dict[str, float]:
    start = time.perf_counter()
    first = last = 0.0
    count = 0
    for _ in llm.create_completion(text, max_tokens=tokens, temperature=0, stream=True):
        last = time.perf_counter()
        first = first or last
        count += 1
    tps = (count - 1) / (last - first) if last > first else 0.0
    return {"ttft": first - start, "tokens": count, "tps": tps}


def concurrent(srv: Server, prompts: list[str], tokens: int, threads: int) -> dict[str, float]:
    """Streams at once: all tokens / (the last token - the first request)."""
    results: list[dict[str, float]] = [{}] * len(prompts)

    def one(k: int) -> None:
        results[k] = power_stream(srv, prompts[k], tokens, threads)

    workers = [threading.Thread(target=one, args=(k,)) for k in range(len(prompts))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    total = sum(r["tokens"] for r in results)
    return {"tokens": total, "tps": total / max(r["last"] for r in results)}


class GatewayCpu:
    """The gateway process's CPU seconds over a stretch of work."""

    def __init__(self, pid: int) -> None:
        self._proc = psutil.Process(pid)

    def __call__(self) -> float:
        t = self._proc.cpu_times()
        return float(t.user + t.system)


# ---------------------------------------------------------------------- the GPU and the runner


def has_gpu() -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload()) and shutil.which("nvidia-smi") is not None


def driver_vram_by_pid() -> dict[int, int]:
    """What the driver says each process holds on the GPUs, in bytes (``nvidia-smi``)."""
    out = subprocess.run(
        ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    held: dict[int, int] = {}
    for line in out.splitlines():
        pid, _, mib = line.partition(",")
        if mib.strip().isdigit():
            held[int(pid)] = held.get(int(pid), 0) + int(mib) * 2**20
    return held


def driver_memory_used() -> int:
    """Bytes in use on the first GPU, by everything (``nvidia-smi``)."""
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
    ).stdout.split()
    return int(out[0]) * 2**20 if out and out[0].isdigit() else -1


def thread_policies(pid: int) -> list[tuple[str, int, int]]:
    """Each thread's name, scheduling policy and nice value (Linux: a thread id is a pid)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        tid = int(task.name)
        try:
            name = (task / "comm").read_text().strip()
            found.append((name, os.sched_getscheduler(tid), os.getpriority(os.PRIO_PROCESS, tid)))
        except OSError:
            continue  # (it ended meanwhile)
    return found


def runner_state(srv: Server, gpu: bool) -> dict[str, Any]:
    ps = srv.http.get(f"{srv.url}/api/ps").json()["models"][0]
    pid = int(ps["pid"])
    policies = thread_policies(pid)
    state: dict[str, Any] = {
        "size": ps["size"],
        "size_vram": ps["size_vram"],
        "runner_threads": len(policies),
        # (but the quiet start's own thread, asleep for good: runner.quiet)
        "runner_threads_not_plain": [
            p for p in policies if p[1:] != (os.SCHED_OTHER, 0) and p[0] != "quiet-start"
        ],
    }
    if gpu:
        driver = driver_vram_by_pid()
        state["driver_vram_of_runner"] = driver.get(pid, 0)
        state["driver_vram_by_pid"] = {str(k): v for k, v in driver.items()}
        state["size_vram_equals_driver"] = ps["size_vram"] == driver.get(pid, -1)
        # the whole card's use, for a container whose driver lists no per-process figures
        state["driver_memory_used_total"] = driver_memory_used()
    return state


# ---------------------------------------------------------------------- the run


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def decode_vs_inprocess(
    model: Path, home: Path, rounds: int, tokens: int, threads: int, gpu: bool
) -> dict[str, Any]:
    from llama_cpp import Llama

    srv = Server(home)
    srv.env["OLLAMA_NUM_PARALLEL"] = "1"
    with srv.running():
        srv.create(MODEL, model)
        power_stream(srv, prompt(-1), 8, threads)  # load, first decode
        state = runner_state(srv, gpu)
        llm = Llama(
            str(model), n_gpu_layers=-1 if gpu else 0, n_ctx=CTX, n_threads=threads, verbose=False
        )
        inproc_stream(llm, prompt(-2), 8)
        gateway = GatewayCpu(srv.proc.pid if srv.proc else 0)
        p_tps, i_tps, p_ttft, i_ttft, p_headers, p_runner = [], [], [], [], [], []
        cpu_s, streamed = 0.0, 0  # the gateway's CPU and the tokens it streamed, all rounds
        for r in range(rounds):
            for side in ("power", "inproc") if r % 2 == 0 else ("inproc", "power"):
                if side == "power":
                    before = gateway()
                    p = power_stream(srv, prompt(r), tokens, threads)
                    cpu_s += gateway() - before
                    streamed += int(p["tokens"])
                    p_tps.append(p["tps"])
                    p_ttft.append(p["ttft"])
                    p_headers.append(p["headers"])
                    p_runner.append(p["runner_prompt"])
                else:
                    q = inproc_stream(llm, prompt(r + 500), tokens)
                    i_tps.append(q["tps"])
                    i_ttft.append(q["ttft"])
        llm.close()
        # again after every round's decodes, once /api/ps may ask the driver anew: a CUDA
        # runner's first decodes add to what it held at the load's end
        time.sleep(VRAM_REFRESH_S + 0.5)
        after = runner_state(srv, gpu)
    per_round = [p / q for p, q in zip(p_tps, i_tps, strict=True)]
    return {
        "decode_tps_power": summary(p_tps),
        "decode_tps_inprocess": summary(i_tps),
        "decode_ratio_per_round": per_round,
        "decode_ratio_median_of_rounds": statistics.median(per_round),
        "ttft_power_s": summary(p_ttft),
        "ttft_inprocess_s": summary(i_ttft),
        "ttft_power_headers_s": summary(p_headers),
        "ttft_power_runner_prompt_eval_s": summary(p_runner),
        # (a sum over the rounds: psutil counts CPU time in clock ticks of 10 ms)
        "gateway_cpu_us_per_token_1_stream": cpu_s / max(1, streamed) * 1e6,
        "runner": state,
        "runner_after_rounds": after,
    }


def four_vs_one(model: Path, home: Path, rounds: int, tokens: int, threads: int) -> dict[str, Any]:
    srv = Server(home)
    srv.env["OLLAMA_NUM_PARALLEL"] = str(PARALLEL)
    with srv.running():
        srv.create(MODEL, model)
        power_stream(srv, prompt(-1), 8, threads)
        gateway = GatewayCpu(srv.proc.pid if srv.proc else 0)
        rates: dict[str, list[float]] = {"one": [], "four": []}
        cpu_s, streamed = 0.0, 0
        for r in range(rounds):
            order = ["one", "four"] if r % 2 == 0 else ["four", "one"]
            runs: dict[str, list[float]] = {"one": [], "four": []}
            for i, kind in enumerate(order + order[::-1]):  # mirrored: A B B A
                n = PARALLEL if kind == "four" else 1
                prompts = [prompt(1000 * r + 100 * i + k) for k in range(n)]
                before = gateway()
                got = concurrent(srv, prompts, tokens, threads)
                if kind == "four":
                    cpu_s += gateway() - before
                    streamed += int(got["tokens"])
                runs[kind].append(got["tps"])
            for kind, values in runs.items():
                rates[kind].append(statistics.mean(values))
    per_round = [f / o for f, o in zip(rates["four"], rates["one"], strict=True)]
    return {
        "tps_1_stream": summary(rates["one"]),
        "tps_4_streams": summary(rates["four"]),
        "four_over_one_per_round": per_round,
        "four_over_one_median_of_rounds": statistics.median(per_round),
        "gateway_cpu_us_per_token_4_streams": cpu_s / max(1, streamed) * 1e6,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, required=True, help="a GGUF (all layers go to the GPU)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=psutil.cpu_count(logical=False) or 1)
    ap.add_argument("--out", default="docs/bench-gpu.json")
    args = ap.parse_args()
    import llama_cpp

    gpu = has_gpu()
    machine = Machine.probe()
    machine.match_runner_cpu_mode()  # (the in-process baseline's kernels)
    results: dict[str, Any] = {
        "gpu": gpu,
        "gpu_name": _gpu_name() if gpu else "",
        "model": args.model.name,
        "model_bytes": args.model.stat().st_size,
        "tokens": args.tokens,
        "rounds": args.rounds,
        "threads": args.threads,
        "llama_cpp_python": llama_cpp.__version__,
    }
    if gpu:
        results["driver_memory_used_before"] = driver_memory_used()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        (home / "a").mkdir()
        (home / "b").mkdir()
        results.update(decode_vs_inprocess(args.model, home / "a", args.rounds, args.tokens,
                                           args.threads, gpu))  # fmt: skip
        sys.stderr.write(f"decode through the gateway: {json.dumps(results)}\n")
        results.update(four_vs_one(args.model, home / "b", args.rounds, args.tokens, args.threads))
    results["machine"] = machine.finish()
    publish(results, args.out)
    return 0


def _gpu_name() -> str:
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
