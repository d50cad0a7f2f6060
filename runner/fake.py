"""A deterministic engine for tests, selected with ``--engine fake:<mode>?<options>``.

Modes: ``echo`` generates the prompt's words back, then an end token; ``count`` generates
``1 2 3 …`` until ``num_predict`` or the context fills. Options (query string):
``delay`` seconds per token, ``load_delay`` seconds to load, ``fail_load=1`` (load fails),
``crash_after=N`` (the process dies abruptly after N tokens, writing to stderr first),
``crash_before=1`` (dies before the first token of a request), ``hang=1`` (the process
stops answering anything, as a wedged runner does), ``n_ctx_train`` (default 2048).
It keeps a prefix cache like the real engine, so ``prompt_cached`` behaves the same way.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Generator, Sequence
from urllib.parse import parse_qs

import psutil

from proto import Generate, LoadParams, Memory
from runner.engine import EngineError, GenStats, LoadInfo, PromptTooLongError, Sampled

__all__ = ["FakeEngine", "parse_fake_spec"]

EOS = 1


def parse_fake_spec(spec: str) -> FakeEngine:
    """``fake``, ``fake:echo`` or ``fake:count?delay=0.01&crash_after=3`` -> a FakeEngine."""
    _, _, rest = spec.partition(":")
    mode, _, query = rest.partition("?")
    opts = {k: v[-1] for k, v in parse_qs(query).items()}
    return FakeEngine(mode=mode or "echo", **{k: float(v) for k, v in opts.items()})


class FakeEngine:
    def __init__(
        self,
        *,
        mode: str = "echo",
        delay: float = 0.0,
        load_delay: float = 0.0,
        fail_load: float = 0,
        crash_after: float = -1,
        crash_before: float = 0,
        hang: float = 0,
        n_ctx_train: float = 2048,
    ) -> None:
        if mode not in ("echo", "count"):
            raise ValueError(f"unknown fake engine mode {mode!r}")
        self.mode = mode
        self.delay = delay
        self.load_delay = load_delay
        self.fail_load = bool(fail_load)
        self.crash_after = int(crash_after)
        self.crash_before = bool(crash_before)
        self.hang = bool(hang)
        self.n_ctx_train = int(n_ctx_train)
        self._vocab: dict[str, int] = {"<s>": 0, "</s>": EOS}
        self._words: list[str] = ["<s>", "</s>"]
        self._cached: list[int] = []
        self._n_ctx = 0
        self._generated = 0

    def load(self, params: LoadParams) -> LoadInfo:
        if self.load_delay:
            time.sleep(self.load_delay)
        if self.fail_load:
            sys.stderr.write("fake engine: cannot load model (fail_load)\n")
            raise EngineError("fake engine refused to load the model")
        if not os.path.exists(params.model_path):
            raise EngineError(f"model file not found: {params.model_path}")
        self._n_ctx = min(params.n_ctx, self.n_ctx_train)
        return LoadInfo(n_ctx=self._n_ctx, n_ctx_train=self.n_ctx_train, n_vocab=len(self._words))

    def close(self) -> None:
        self._cached.clear()

    def memory(self) -> Memory:
        return Memory(rss=psutil.Process().memory_info().rss)

    def _id(self, word: str) -> int:
        if word not in self._vocab:
            self._vocab[word] = len(self._words)
            self._words.append(word)
        return self._vocab[word]

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        ids = [self._id(w) for w in text.split()]
        return [0, *ids] if add_special else ids

    def detokenize(self, tokens: Sequence[int]) -> str:
        return "".join(self.piece(t).decode() for t in tokens)

    def piece(self, token: int) -> bytes:
        return b"" if token in (0, EOS) else (self._words[token] + " ").encode()

    def is_eog(self, token: int) -> bool:
        return token == EOS

    def generate(
        self, req: Generate, prompt: list[int], stats: GenStats
    ) -> Generator[Sampled, None, None]:
        if len(prompt) >= self._n_ctx and not (req.truncate and req.shift):
            raise PromptTooLongError("the prompt is longer than the context length")
        common = 0
        while (
            common < min(len(self._cached), len(prompt) - 1)
            and self._cached[common] == prompt[common]
        ):
            common += 1
        self._cached = list(prompt)
        stats.prompt_tokens, stats.prompt_cached = len(prompt), common
        if self.crash_before:
            self._die("crash before the first token")
        words = [t for t in prompt if t != 0] if self.mode == "echo" else []
        i = 0
        try:
            while True:
                if self.hang:
                    os.kill(os.getpid(), signal.SIGSTOP)
                if self.crash_after >= 0 and self._generated >= self.crash_after:
                    self._die(f"crash after {self._generated} tokens")
                if self.delay:
                    time.sleep(self.delay)
                if self.mode == "echo":
                    token = words[i] if i < len(words) else EOS
                else:
                    token = self._id(str(i + 1))
                i += 1
                self._generated += 1
                yield Sampled(token)
                if len(self._cached) >= self._n_ctx:
                    if not req.shift:
                        stats.context_full = True
                        return
                    del self._cached[req.num_keep : req.num_keep + len(self._cached) // 2]
                self._cached.append(token)
        finally:
            stats.context = list(self._cached)

    def embed(self, texts: Sequence[str], *, truncate: bool) -> tuple[list[list[float]], int]:
        vectors = []
        n = 0
        for text in texts:
            ids = self.tokenize(text, add_special=False, parse_special=False)
            n += len(ids)
            vec = [float(len(ids)), float(sum(ids) % 97), 1.0]
            norm = sum(v * v for v in vec) ** 0.5
            vectors.append([v / norm for v in vec])
        return vectors, n

    def _die(self, why: str) -> None:
        sys.stderr.write(f"fake engine: fatal: {why}\n")
        sys.stderr.flush()
        os._exit(9)
