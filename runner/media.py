"""Images in a prompt, from the request's text to the KV cache; the engine-independent part.

The gateway renders each image as an ``[img-N]`` tag (Ollama's convention) and sends the bytes
in ``Generate.images``. ``build_prompt`` tokenizes the text between the tags and asks the
engine to encode image N where its tag stands: text pieces (e.g. a model's begin-of-image
tokens) and ``Media``, each filling ``n_tokens`` positions. The prompt keeps one placeholder id
per such position: negative, so it is never a vocabulary token, and derived from the image's
bytes, so the slots' prefix cache (``runner.slots``) reuses an image's KV only when the same
image sits at the same place.

The scheduler evaluates a prompt's text in the shared batches as usual, each chunk ending at the
next image; when evaluation reaches an image, ``feed`` has the engine evaluate it on its own
(its text before it is in the cache by then) and evaluation goes on after it.

All of this runs on the inference thread, so a prompt must not make it work without end: a
tag may repeat (users type them too), but each distinct image is encoded once and its ``Media``
shared by the spans of its tags; a prompt that cannot fit the context is refused before more
images are encoded; and a cancelled request stops between two images.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from proto import Generate
from runner.engine import BadRequestError, Engine, Media, PromptTooLongError, Span
from runner.slots import fit_prompt
from runner.vocab import check_text, check_tokens

if TYPE_CHECKING:
    from runner.slots import Seq

__all__ = ["IMAGE_TAG", "build_prompt", "feed", "placeholder", "request_prompt", "reuse"]

IMAGE_TAG = re.compile(r"\[img-(\d+)\]")

Tokenize = Callable[[str, bool], list[int]]  # (text, add_special) -> tokens
Encode = Callable[[bytes], Sequence[list[int] | Media]]  # image -> text tokens and media


def placeholder(data: bytes) -> int:
    """The id an image's positions carry in a prompt: negative, the same for the same bytes."""
    digest = hashlib.blake2b(data, digest_size=8).digest()  # 63 bits: collisions are moot
    return -1 - (int.from_bytes(digest, "little") >> 1)


def build_prompt(
    text: str,
    images: Sequence[bytes],
    *,
    add_special: bool,
    tokenize: Tokenize,
    encode: Encode,
    limit: int = 0,
) -> tuple[list[int], list[Span]]:
    """``text`` tokenized with each ``[img-N]`` tag replaced by image N (Ollama's runner does
    the same: an unknown N is an error, an image without a tag is not used). Image N is encoded
    at its first tag only. ``PromptTooLongError`` as soon as the prompt reaches ``limit``
    positions (0: no limit), before any more image is encoded."""
    prompt: list[int] = []
    spans: list[Span] = []
    markers: dict[int, int] = {}  # image index -> placeholder (its bytes hashed once)
    encoded: dict[int, list[list[int] | _Shared]] = {}  # placeholder -> the image's parts
    pieces = IMAGE_TAG.split(text)  # text, N, text, N, ..., text
    try:
        for i, piece in enumerate(pieces):
            if i % 2 == 0:
                if piece or (add_special and i == 0):
                    prompt += tokenize(piece, add_special and i == 0)
            else:
                index = int(piece)
                if index >= len(images):
                    raise BadRequestError(f"invalid image index: {index}")
                marker = markers.get(index)
                if marker is None:
                    marker = markers[index] = placeholder(images[index])
                parts = encoded.get(marker)
                if parts is None:
                    parts = encoded[marker] = []
                    for made in encode(images[index]):
                        parts.append(made if isinstance(made, list) else _Shared(made))
                for part in parts:
                    if isinstance(part, list):
                        prompt += part
                    else:
                        spans.append(Span(len(prompt), _Use(part)))
                        prompt += [marker] * part.media.n_tokens
            if limit and len(prompt) >= limit:
                raise PromptTooLongError(
                    "the prompt with its images is longer than the context length currently"
                    f" available to the model; prompt at least {len(prompt)} tokens,"
                    f" context {limit} tokens"
                )
        if spans and spans[-1].start + spans[-1].media.n_tokens == len(prompt):
            raise BadRequestError("the prompt must not end with an image: add text after it")
    except BaseException:
        close(spans)
        raise
    finally:  # the spans hold what they use from now on
        for parts in encoded.values():
            for part in parts:
                if isinstance(part, _Shared):
                    part.release()
    return prompt, spans


class _Shared:
    """An image's ``Media`` that the spans of its tags share, closed once nothing holds it:
    the prompt being built holds it first, then each span."""

    __slots__ = ("holds", "media")

    def __init__(self, media: Media) -> None:
        self.media = media
        self.holds = 1

    def release(self) -> None:
        self.holds -= 1
        if self.holds == 0:
            self.media.close()


class _Use:
    """One span's hold on a shared ``Media`` (what ``Span.media`` is); ``media`` is what the
    engine evaluates."""

    __slots__ = ("_open", "_shared", "media", "n_tokens")

    def __init__(self, shared: _Shared) -> None:
        shared.holds += 1
        self._shared = shared
        self._open = True
        self.media = shared.media
        self.n_tokens = shared.media.n_tokens

    def close(self) -> None:
        if self._open:
            self._open = False
            self._shared.release()


def request_prompt(
    engine: Engine, req: Generate, n_ctx: int, *, n_vocab: int
) -> tuple[list[int], list[Span]]:
    """``req``'s prompt (its ``tokens``, then its text with the images in it), fitted to the
    context. A prompt with images is never cut: the cut could fall inside an image.
    ``BadRequestError`` for a token that is not in the vocabulary or too long a text."""
    check_tokens(req.tokens, n_vocab, "context")
    prompt = list(req.tokens)  # e.g. /api/generate's `context`, then the new text
    spans: list[Span] = []
    if req.prompt:
        check_text(req.prompt, "the prompt")
        add_bos = req.add_bos and not prompt
        if req.images:
            # each tag takes a position at least: too many cannot fit, whatever the images are
            tags = sum(1 for _ in IMAGE_TAG.finditer(req.prompt))
            if len(prompt) + tags >= n_ctx:
                raise PromptTooLongError(
                    f"the prompt has {tags} image tags: more than the context length currently"
                    f" available to the model ({n_ctx} tokens) can hold"
                )
            tokens, spans = engine.media_prompt(
                req.prompt, req.images, add_special=add_bos, limit=n_ctx - len(prompt)
            )
            for span in spans:
                span.start += len(prompt)
            prompt += tokens
        else:
            prompt += engine.tokenize(req.prompt, add_special=add_bos, parse_special=True)
    if not prompt:
        raise BadRequestError("the prompt is empty")
    if spans and len(prompt) >= n_ctx:
        close(spans)
        raise PromptTooLongError(
            "the prompt with its images is longer than the context length currently available"
            f" to the model; prompt {len(prompt)} tokens, context {n_ctx} tokens"
        )
    return fit_prompt(prompt, req, n_ctx), spans


def reuse(spans: list[Span], common: int) -> int:
    """How much of a cached prefix of ``common`` positions to keep: never part of an image (a
    prefix that ends inside one ends at its start instead)."""
    for span in spans:
        if span.start < common < span.start + span.media.n_tokens:
            return span.start
    return common


def feed(engine: Engine, seq: Seq) -> int:
    """Evaluate the images that start where ``seq``'s prompt evaluation stands (dropping those
    its slot had cached), and return where the text after them ends: the next image's start,
    else the prompt's end."""
    spans, slot = seq.spans, seq.slot
    while spans and spans[0].start < seq.n_eval:  # in the cache already
        spans.pop(0).media.close()
    while spans and spans[0].start == seq.n_eval:
        media = spans.pop(0).media
        n = media.n_tokens
        try:
            inner = media.media if isinstance(media, _Use) else media
            engine.decode_media(slot.index, inner, len(slot.cached))
        finally:
            media.close()
        slot.cached.extend(seq.prompt[seq.n_eval : seq.n_eval + n])
        seq.n_eval += n
    return spans[0].start if spans else len(seq.prompt)


def close(spans: list[Span]) -> None:
    for span in spans:
        span.media.close()
    spans.clear()
