"""The in-process ceiling for ``bench_batching``: N greedy streams on llama-cpp-python, no server.

    python scripts/batch_ceiling.py --threads 2 --ctx 2048 --parallel 4   (a child of the bench)

A child process that holds one llama.cpp context made with the runner's own parameters
(``runner.llama_params``: one KV stream per sequence, the same batch, flash attention, threads
and CPU mode) and answers, for each JSON line ``{"prompts": [...], "tokens": N}`` on stdin, one
line ``{"last": s, "count": n}``, the last token's time from the line's arrival and the tokens
made. Every prompt is evaluated in one decode, then each step decodes one token of every running
sequence and takes its first largest logit, until a sequence has ``tokens`` tokens or ends (an
end-of-generation token, which is not counted, as a server does not send it). Nothing serves,
frames, samples through llama.cpp's chain or detokenizes: what a server adds to the same kernels
is what separates its rate from this one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from machine import Machine  # first: it opens libstdc++ and caps OpenBLAS, as a runner does

# isort: split
import llama_cpp
import numpy as np

from power.create.starter import starter_gguf_path
from proto import CpuMode, LoadParams
from runner.llama_params import context_params, model_params


class Ceiling:
    def __init__(self, *, threads: int, ctx: int, parallel: int, cpu_mode: CpuMode) -> None:
        params = LoadParams(
            model_path=str(starter_gguf_path()),
            n_ctx=ctx,
            n_threads=threads,
            num_parallel=parallel,
            cpu_mode=cpu_mode,
        )
        llama_cpp.llama_backend_init()
        mparams, self._keep = model_params(params, cpu_mode, lambda _fraction: True)
        self._model = llama_cpp.llama_model_load_from_file(params.model_path.encode(), mparams)
        if not self._model:
            raise SystemExit(f"cannot load {params.model_path}")
        cparams = context_params(
            params, n_ctx=ctx, n_par=parallel, n_batch=params.n_batch, threads=threads
        )
        self._ctx = llama_cpp.llama_init_from_model(self._model, cparams)
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self._n_batch = params.n_batch
        self._batch = llama_cpp.llama_batch_init(params.n_batch, 0, 1)

    def _tokenize(self, text: str) -> list[int]:
        raw = text.encode()
        buf = (llama_cpp.llama_token * (len(raw) + 8))()
        n = llama_cpp.llama_tokenize(self._vocab, raw, len(raw), buf, len(buf), False, True)
        return list(buf[:n])

    def _decode(self, rows: list[tuple[int, int, int, bool]]) -> np.ndarray:
        """Decode (seq, pos, token, logits) rows; the logits rows asked for, in order."""
        b = self._batch
        for i, (seq, pos, token, logits) in enumerate(rows):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, pos, 1, logits
            b.seq_id[i][0] = seq
        b.n_tokens = len(rows)
        if llama_cpp.llama_decode(self._ctx, b) != 0:
            raise RuntimeError("llama_decode failed")
        n_out = sum(1 for r in rows if r[3])
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits(self._ctx), (n_out, self._n_vocab))

    def run(self, prompts: list[str], tokens: int) -> dict[str, float]:
        start = time.perf_counter()
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self._ctx), True)
        seqs = [self._tokenize(p) for p in prompts]
        rows = [
            (s, i, t, i == len(toks) - 1) for s, toks in enumerate(seqs) for i, t in enumerate(toks)
        ]
        if len(rows) > self._n_batch:
            raise SystemExit("the prompts are longer than one batch")
        picks = self._decode(rows).argmax(axis=1)
        pos = [len(toks) for toks in seqs]
        made: dict[int, int] = {}  # seq -> tokens it made
        running: dict[int, int] = {}  # seq -> its last token, while it goes on
        for seq, token in enumerate(int(t) for t in picks):
            if not llama_cpp.llama_vocab_is_eog(self._vocab, token):
                made[seq], running[seq] = 1, token
        while running := {s: t for s, t in running.items() if made[s] < tokens}:
            order = sorted(running)
            picks = self._decode([(s, pos[s], running[s], True) for s in order]).argmax(axis=1)
            for s, token in zip(order, (int(t) for t in picks), strict=True):
                pos[s] += 1
                if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                    del running[s]
                else:
                    made[s] += 1
                    running[s] = token
        return {"last": time.perf_counter() - start, "count": sum(made.values())}


def _answer(msg: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--ctx", type=int, required=True)
    ap.add_argument("--parallel", type=int, required=True)
    args = ap.parse_args()
    machine = Machine.probe(runner=False)
    machine.match_runner_cpu_mode()
    ceiling = Ceiling(
        threads=args.threads,
        ctx=args.ctx,
        parallel=args.parallel,
        cpu_mode=CpuMode(machine.baseline_cpu_mode),
    )
    _answer({"ready": True})
    for line in sys.stdin:
        job = json.loads(line)
        _answer(ceiling.run(job["prompts"], job["tokens"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
