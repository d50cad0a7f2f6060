"""Images in prompts, engine-independent: tags to spans, cache reuse, and the scheduler's order
(an image is evaluated on its own once the text before it is in the cache)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from proto import Done, Generate, Msg, Sampling
from runner.batch import Scheduler
from runner.engine import BadRequestError, Chunk, LoadInfo, Media, PromptTooLongError, Span
from runner.fake import FakeEngine
from runner.media import build_prompt, placeholder, request_prompt, reuse
from runner.vision import image_format


class Image:
    def __init__(self, n_tokens: int) -> None:
        self.n_tokens = n_tokens
        self.closed = False

    def close(self) -> None:
        self.closed = True


def words(text: str, special: bool) -> list[int]:
    return ([1] if special else []) + [len(w) + 10 for w in text.split()]


def as_image(data: bytes) -> list[list[int] | Media]:
    return [[99], Image(len(data)), [98]]  # like a model's begin/end-of-image tokens


def test_tags_become_image_positions_and_only_the_first_text_gets_bos() -> None:
    images = [b"abc", b"hello"]
    prompt, spans = build_prompt(
        "look [img-1] and [img-0] now", images, add_special=True, tokenize=words, encode=as_image
    )
    one, zero = placeholder(b"hello"), placeholder(b"abc")
    assert prompt == [1, 14, 99, one, one, one, one, one, 98, 13, 99, zero, zero, zero, 98, 13]
    assert [(s.start, s.media.n_tokens) for s in spans] == [(3, 5), (11, 3)]
    assert one < 0
    assert zero < 0
    assert one != zero
    assert placeholder(b"hello") == one


def test_a_prompt_may_start_with_an_image_and_may_leave_one_unused() -> None:
    prompt, spans = build_prompt(
        "[img-0]x", [b"ab", b"unused"], add_special=True, tokenize=words, encode=as_image
    )
    assert prompt[:2] == [1, 99]  # BOS before the image
    assert len(spans) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("see [img-2] here", "invalid image index: 2"),
        ("see [img-0]", "the prompt must not end with an image"),
    ],
)
def test_bad_tags_are_bad_requests_and_free_what_was_encoded(text: str, message: str) -> None:
    made: list[Image] = []

    def encode(data: bytes) -> list[list[int] | Media]:
        made.append(Image(2))
        return [made[-1]]

    with pytest.raises(BadRequestError, match=message):
        build_prompt(text, [b"a", b"b"], add_special=False, tokenize=words, encode=encode)
    assert all(image.closed for image in made)


def test_a_reused_prefix_never_keeps_half_of_an_image() -> None:
    spans = [Span(2, Image(4)), Span(8, Image(4))]
    assert reuse(spans, 7) == 7  # the first image is cached whole
    assert reuse(spans, 8) == 8
    assert reuse(spans, 10) == 8  # the second only in part: evaluate it again
    assert reuse(spans, 2) == 2
    assert reuse([], 5) == 5


def test_formats_are_recognised_by_their_first_bytes() -> None:
    assert image_format(b"\x89PNG\r\n\x1a\n....") == "png"
    assert image_format(b"\xff\xd8\xff\xe0....") == "jpeg"
    assert image_format(b"GIF89a....") == "gif"
    assert image_format(b"RIFF\0\0\0\0WEBPVP8 ") == "webp"
    assert image_format(b"RIFF\0\0\0\0WAVEfmt ") is None
    assert image_format(b"hello") is None


class MediaEngine(FakeEngine):
    """The fake engine with a projector that makes each image one chunk of len(bytes) tokens;
    it records every decode."""

    def __init__(self) -> None:
        super().__init__(mode="count")
        self.calls: list[tuple[Any, ...]] = []
        self.encoded = 0

    def media_prompt(
        self, text: str, images: Sequence[bytes], *, add_special: bool, limit: int = 0
    ) -> tuple[list[int], list[Span]]:
        def tokenize(t: str, special: bool) -> list[int]:
            return self.tokenize(t, add_special=special, parse_special=True)

        def encode(data: bytes) -> list[list[int] | Media]:
            self.encoded += 1
            return [Image(len(data))]

        return build_prompt(
            text, images, add_special=add_special, tokenize=tokenize, encode=encode, limit=limit
        )

    def decode(self, chunks: Sequence[Chunk]) -> None:
        self.calls.append(("text", [(c.seq, c.pos, len(c.tokens), c.logits) for c in chunks]))

    def decode_media(self, seq: int, media: Media, pos: int) -> None:
        self.calls.append(("image", seq, pos, media.n_tokens))


def run(engine: MediaEngine, sched: Scheduler, req: Generate) -> Done:
    out: list[Msg] = []
    sched._emit = out.extend
    sched.admit(req)
    while sched.active:
        sched.step()
    (done,) = [m for m in out if isinstance(m, Done)]
    return done


def test_the_scheduler_evaluates_an_image_after_the_text_before_it() -> None:
    engine = MediaEngine()
    sched = Scheduler(engine, LoadInfo(n_ctx=64, n_vocab=8, n_batch=4), print)
    req = Generate(id=1, prompt="a b [img-0] c d", images=(b"xyz",), num_predict=2,
                   sampling=Sampling(temperature=0))  # fmt: skip
    done = run(engine, sched, req)
    assert engine.calls[:3] == [
        ("text", [(0, 0, 3, False)]),  # BOS a b: up to the image
        ("image", 0, 3, 3),
        ("text", [(0, 6, 2, True)]),  # c d, then the first sample
    ]
    assert done.stats.prompt_tokens == 8
    assert all(t >= 0 for t in done.context[:3])
    assert done.context[3:6] == (placeholder(b"xyz"),) * 3

    engine.calls.clear()
    again = run(engine, sched, Generate(id=2, prompt="a b [img-0] c d", images=(b"xyz",),
                                        num_predict=1))  # fmt: skip
    assert again.stats.prompt_cached == 7  # the image too
    assert not [c for c in engine.calls if c[0] == "image"]

    engine.calls.clear()
    other = run(engine, sched, Generate(id=3, prompt="a b [img-0] c d", images=(b"uvw",),
                                        num_predict=1))  # fmt: skip
    assert other.stats.prompt_cached == 3  # up to the image that differs
    assert ("image", 0, 3, 3) in engine.calls


def test_a_prompt_with_images_is_never_cut_to_fit() -> None:
    engine = MediaEngine()
    req = Generate(id=1, prompt="a [img-0] b", images=(b"x" * 20,))
    assert len(request_prompt(engine, req, 64, n_vocab=8)[0]) == 23
    with pytest.raises(PromptTooLongError, match="with its images"):
        request_prompt(engine, req, 16, n_vocab=8)
    plain = FakeEngine()
    with pytest.raises(BadRequestError, match="does not support images"):
        request_prompt(plain, req, 64, n_vocab=8)


def test_a_prompt_stops_encoding_images_once_it_cannot_fit_the_context_left() -> None:
    """The runner's context left after the request's own tokens is the prompt's limit: the
    images past it are never read."""
    engine = MediaEngine()
    images = tuple(bytes([n]) * 10 for n in range(8))
    text = " ".join(f"see [img-{n}]" for n in range(8)) + " now"
    req = Generate(id=1, prompt=text, images=images, tokens=(1, 2, 3))
    with pytest.raises(PromptTooLongError):
        request_prompt(engine, req, 30, n_vocab=8)
    assert engine.encoded == 3  # 3 tokens, then 11 positions a tag and its text: 14, 25, 36
