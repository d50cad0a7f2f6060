"""Where a warm first token's time goes inside the runner's engine, against llama-cpp-python's
own ``Llama`` on the same file (issue 17 item 6: at GPU pace the gateway's warm time to first
token was ~21 ms over in-process, unexplained, while on the CPU the two are within ±8 ms).

    python scripts/ttft_probe.py --model M.gguf [--rounds 8] [--gpu-layers -1] [--out F.json]

In this one process, with no gateway and no runner process: ``runner.llama_engine.LlamaEngine``
(the runner's engine, its context made by ``runner.llama_params``) evaluates each prompt as the
runner's scheduler does (one ``decode`` of the prompt's tokens, then the sample), once with
llama.cpp's automatic flash attention (what the runner asks for when the model's options do not
say) and once with it off (``Llama``'s default); ``Llama.create_completion`` streams the same
prompts to its first token. Rounds rotate the three sides. Each engine side reports the decode
call and the sample apart: on a GPU ``llama_decode`` only queues the work, and the sample waits
for it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# (scripts/machine.py; importing it opens libstdc++ before llama.cpp's libraries, as the runner
# does: runner.stdcxx)
from machine import Machine, publish

from proto import Generate, LoadParams, Sampling
from runner.engine import Chunk
from runner.llama_engine import LlamaEngine

CTX = 4096
GREEDY = Sampling(temperature=0.0, seed=42)


def prompt(i: int) -> str:
    return (
        f"<|im_start|>user\nRequest {i}: write a long story about a lighthouse keeper who finds "
        "a message in a bottle, in ten paragraphs.<|im_end|>\n<|im_start|>assistant\n"
    )


class EngineSide:
    """The runner's engine, loaded here, evaluating a prompt the way the scheduler does."""

    def __init__(self, model: Path, gpu_layers: int, threads: int, flash_attn: bool | None):
        self.engine = LlamaEngine()
        params = LoadParams(
            model_path=str(model),
            n_ctx=CTX,
            n_gpu_layers=999 if gpu_layers < 0 else gpu_layers,
            n_threads=threads,
            flash_attn=flash_attn,
        )
        self.info = self.engine.load(params, lambda _fraction: True)

    def first_token(self, text: str) -> dict[str, float]:
        engine = self.engine
        t0 = time.perf_counter()
        engine.forget(0, 0)
        tokens = engine.tokenize(text, add_special=True, parse_special=True)
        req = Generate(id=0, prompt=text, sampling=GREEDY, num_predict=8)
        sampler = engine.sampler(req, tokens)
        t1 = time.perf_counter()
        engine.decode([Chunk(0, tokens, 0, True)])
        t2 = time.perf_counter()
        token = sampler.sample(len(tokens) - 1).token
        t3 = time.perf_counter()
        engine.decode([Chunk(0, [token], len(tokens), True)])  # and one step of the answer
        sampler.sample(0)
        t4 = time.perf_counter()
        sampler.close()
        return {"admit": t1 - t0, "decode_call": t2 - t1, "sample": t3 - t2, "first": t3 - t0,
                "next_token": t4 - t3, "prompt_tokens": float(len(tokens))}  # fmt: skip

    def close(self) -> None:
        self.engine.close()


class LlamaSide:
    def __init__(self, model: Path, gpu_layers: int, threads: int) -> None:
        from llama_cpp import Llama

        self.llm = Llama(str(model), n_gpu_layers=gpu_layers, n_ctx=CTX, n_threads=threads,
                         verbose=False)  # fmt: skip

    def first_token(self, text: str) -> dict[str, float]:
        t0 = time.perf_counter()
        for _ in self.llm.create_completion(text, max_tokens=2, temperature=0, stream=True):
            return {"first": time.perf_counter() - t0}
        return {"first": float("nan")}

    def close(self) -> None:
        self.llm.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--gpu-layers", type=int, default=-1, help="-1: every layer")
    ap.add_argument("--threads", type=int, default=0, help="0: the runner's choice")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    import psutil

    threads = args.threads or psutil.cpu_count(logical=False) or 1
    Machine.probe(runner=False).match_runner_cpu_mode()  # (AMX kept out where a runner would)
    sides: dict[str, Any] = {
        "engine_fa_auto": EngineSide(args.model, args.gpu_layers, threads, None),
        "engine_fa_off": EngineSide(args.model, args.gpu_layers, threads, False),
        "llama_cpp_Llama": LlamaSide(args.model, args.gpu_layers, threads),
    }
    names = list(sides)
    for name in names:  # warm each: the first decode of a context allocates
        sides[name].first_token(prompt(-1 - names.index(name)))
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for r in range(args.rounds):
        for k in range(len(names)):
            name = names[(r + k) % len(names)]
            rows[name].append(sides[name].first_token(prompt(100 * r + k)))
    for side in sides.values():
        side.close()
    results: dict[str, Any] = {"model": args.model.name, "threads": threads,
                               "gpu_layers": args.gpu_layers, "rounds": args.rounds}  # fmt: skip
    for name, got in rows.items():
        results[name] = {
            key + "_ms": statistics.median(row[key] for row in got) * 1e3
            for key in got[0]
            if key != "prompt_tokens"
        }
        if "prompt_tokens" in got[0]:
            results[name]["prompt_tokens"] = got[0]["prompt_tokens"]
    publish(results, args.out or None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
