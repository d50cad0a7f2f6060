"""A deterministic engine for tests, selected with ``--engine fake:<mode>?<options>``.

Modes: ``echo`` generates the prompt's words back, then an end token; ``count`` generates
``1 2 3 …`` until ``num_predict`` or the context fills. Options (query string):
``delay`` seconds per token, ``load_delay`` seconds to load (silently, unless ``load_steps=N``:
then in N equal steps, reporting progress after each), ``fail_load=1`` (load fails),
``crash_after=N`` (the process dies abruptly after N tokens, writing to stderr first),
``crash_before=1`` (dies before the first token of a request), ``hang=1`` (the process
stops answering anything, as a wedged runner does), ``kernel_fault=1`` (its first decode dies
of SIGSEGV, as a bad CPU kernel does, unless the model was loaded in CPU mode ``plain``;
``kernel_fault=2``: in every mode),
``n_ctx_train`` (default 2048), ``tokenize_delay`` seconds to tokenize a MiB of text (in
proportion), ``byte_tokens=1`` (a token per UTF-8 byte, spaces included, as byte-level
vocabularies split a character they lack: ``num_predict`` can then stop inside one),
``hold_exit=1`` (once loaded, closing the engine waits until a file named like the model plus
``.exit`` exists: a runner slow to exit, as one freeing a large model is, held as long as a test
needs, up to the runner's wind-down limit of 10 s).
``delay`` also passes once per ``EMBED_CHUNK`` tokens of an embedding decode (which packs up
to ``EMBED_SEQS`` texts).
The runner's scheduler batches it like the real engine (one ``decode`` per step, ``delay``
once per step), so with ``num_parallel`` > 1 sequences interleave, and its slots' prefix cache
makes ``prompt_cached`` behave the same way.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from urllib.parse import parse_qs

import psutil

from proto import CpuMode, Generate, LoadParams, Memory
from runner.engine import (
    BadRequestError,
    Chunk,
    EmbedPart,
    EngineError,
    LoadInfo,
    Media,
    OnProgress,
    PromptTooLongError,
    Sampled,
    Span,
)

__all__ = ["FakeEngine", "parse_fake_spec"]

EOS = 1
VOCAB_SIZE = 1 << 20  # ids the vocabulary may have; words get the next free one as they appear
EMBED_CHUNK = 64
EMBED_SEQS = 16
BYTE_BASE = VOCAB_SIZE - 256  # ids of the byte tokens (``byte_tokens=1``)


def _wait_for_file(path: str) -> None:
    while not os.path.exists(path):
        time.sleep(0.01)


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
        load_steps: float = 0,
        fail_load: float = 0,
        crash_after: float = -1,
        crash_before: float = 0,
        hang: float = 0,
        kernel_fault: float = 0,
        n_ctx_train: float = 2048,
        tokenize_delay: float = 0.0,
        byte_tokens: float = 0,
        hold_exit: float = 0,
    ) -> None:
        if mode not in ("echo", "count"):
            raise ValueError(f"unknown fake engine mode {mode!r}")
        self.mode = mode
        self.delay = delay
        self.load_delay = load_delay
        self.load_steps = int(load_steps)
        self.fail_load = bool(fail_load)
        self.crash_after = int(crash_after)
        self.crash_before = bool(crash_before)
        self.hang = bool(hang)
        self.kernel_fault = int(kernel_fault)
        self._cpu_mode = CpuMode.EXTRA
        self._decoded = False
        self.prefix_copies = 0  # copy_prefix calls (tests look)
        self._embedded: dict[int, tuple[int, int]] = {}  # a split text: (tokens, sum of ids)
        self.n_ctx_train = int(n_ctx_train)
        self.tokenize_delay = tokenize_delay
        self.byte_tokens = bool(byte_tokens)
        self.hold_exit = bool(hold_exit)
        self._exit_file = ""
        self._lock = threading.Lock()
        self._vocab: dict[str, int] = {"<s>": 0, "</s>": EOS}
        self._words: list[str] = ["<s>", "</s>"]
        self._n_ctx = 0
        self._generated = 0

    def load(self, params: LoadParams, progress: OnProgress) -> LoadInfo:
        if self.load_steps > 0:
            for step in range(1, self.load_steps + 1):
                time.sleep(self.load_delay / self.load_steps)
                if not progress(step / self.load_steps):
                    raise EngineError("the load was abandoned: the runner is stopping")
        elif self.load_delay:
            time.sleep(self.load_delay)
        if self.fail_load:
            sys.stderr.write("fake engine: cannot load model (fail_load)\n")
            raise EngineError("fake engine refused to load the model")
        if not os.path.exists(params.model_path):
            raise EngineError(f"model file not found: {params.model_path}")
        self._n_ctx = min(params.n_ctx, self.n_ctx_train)
        self._cpu_mode = params.cpu_mode
        self._exit_file = params.model_path + ".exit" if self.hold_exit else ""
        return LoadInfo(
            n_ctx=self._n_ctx,
            n_vocab=VOCAB_SIZE,
            num_parallel=params.num_parallel,
            n_batch=params.n_batch,
            cpu_mode=params.cpu_mode,
            embed_seqs=EMBED_SEQS,
            copies_prefix=params.num_parallel > 1,
        )

    def close(self) -> None:
        if self._exit_file:  # (the process ends once this returns)
            _wait_for_file(self._exit_file)

    def about(self) -> tuple[str, str]:
        return "fake", ""

    def memory(self) -> Memory:
        return Memory(rss=psutil.Process().memory_info().rss)

    def _id(self, word: str) -> int:
        with self._lock:  # (the vocabulary thread tokenizes too)
            if word not in self._vocab:
                self._vocab[word] = len(self._words)
                self._words.append(word)
            return self._vocab[word]

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        if self.tokenize_delay:
            time.sleep(self.tokenize_delay * len(text) / (1 << 20))
        if self.byte_tokens:
            ids = [BYTE_BASE + b for b in text.encode()]
        else:
            ids = [self._id(w) for w in text.split()]
        return [0, *ids] if add_special else ids

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", errors="replace")

    def piece(self, token: int) -> bytes:
        if token >= BYTE_BASE:
            return bytes([token - BYTE_BASE])
        return b"" if token in (0, EOS) else (self._words[token] + " ").encode()

    def is_eog(self, token: int) -> bool:
        return token == EOS

    def sampler(self, req: Generate, prompt: Sequence[int]) -> _FakeSampler:
        if self.crash_before:
            self._die("crash before the first token")
        words = [t for t in prompt if t != 0] if self.mode == "echo" else []
        return _FakeSampler(self, words)

    def decode(self, chunks: Sequence[Chunk]) -> None:
        plain = self._cpu_mode == CpuMode.PLAIN
        if self.kernel_fault and not self._decoded and (self.kernel_fault > 1 or not plain):
            sys.stderr.write(f"fake engine: bad CPU kernel in mode {self._cpu_mode}\n")
            sys.stderr.flush()
            signal.pthread_kill(threading.get_ident(), signal.SIGSEGV)  # in this thread, as a fault
        self._decoded = True
        if self.delay:
            time.sleep(self.delay)

    def media_prompt(
        self, text: str, images: Sequence[bytes], *, add_special: bool, limit: int = 0
    ) -> tuple[list[int], list[Span]]:
        raise BadRequestError("this model does not support images (it has no projector)")

    def decode_media(self, seq: int, media: Media, pos: int) -> None:
        raise EngineError("this model has no projector")

    def forget(self, seq: int, start: int) -> bool:
        return True

    def shift(self, seq: int, keep: int, discard: int) -> None:
        pass

    def copy_prefix(self, src: int, dst: int, n: int) -> bool:
        self.prefix_copies += 1
        return True

    def next_token(self, words: list[int], i: int) -> int:
        if self.hang:
            os.kill(os.getpid(), signal.SIGSTOP)
        if self.crash_after >= 0 and self._generated >= self.crash_after:
            self._die(f"crash after {self._generated} tokens")
        self._generated += 1
        if self.mode == "echo":
            return words[i] if i < len(words) else EOS
        return self._id(str(i + 1))

    def embed_tokens(self, text: str, *, n_ctx: int, truncate: bool) -> list[int]:
        ids = self.tokenize(text, add_special=False, parse_special=False)
        if len(ids) > n_ctx and not truncate:
            raise PromptTooLongError("the input length exceeds the context length")
        return ids[:n_ctx]

    def embed(self, parts: Sequence[EmbedPart]) -> list[list[float] | None]:
        """A text's vector is ``[tokens, sum of ids % 97, 1]``."""
        n = sum(len(p.tokens) for p in parts)
        if self.delay:
            time.sleep(self.delay * max(1, -(-n // EMBED_CHUNK)))
        out: list[list[float] | None] = []
        for part in parts:
            count, total = self._embedded.pop(part.seq, (0, 0))
            count, total = count + len(part.tokens), total + sum(part.tokens)
            if part.last:
                out.append([float(count), float(total % 97), 1.0])
            else:
                self._embedded[part.seq] = (count, total)
                out.append(None)
        return out

    def embed_forget(self, seq: int) -> None:
        self._embedded.pop(seq, None)

    def _die(self, why: str) -> None:
        sys.stderr.write(f"fake engine: fatal: {why}\n")
        sys.stderr.flush()
        os._exit(9)


class _FakeSampler:
    __slots__ = ("_engine", "_i", "_words")

    def __init__(self, engine: FakeEngine, words: list[int]) -> None:
        self._engine = engine
        self._words = words
        self._i = 0

    def sample(self, row: int) -> Sampled:
        token = self._engine.next_token(self._words, self._i)
        self._i += 1
        return Sampled(token)

    def close(self) -> None:
        pass
