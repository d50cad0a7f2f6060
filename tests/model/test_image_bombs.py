"""Images that would make the runner work or allocate without end, refused or done once: SmolLM2
with the synthetic LLaVA projector (``tests.support.synth``), through a real ``power serve``.

An image whose header claims more pixels than ``MAX_IMAGE_PIXELS`` is a 400 before anything is
decoded (stb_image would allocate what the header claims: 43 bytes of GIF, gigabytes of
memory). A tag repeated in the prompt reads and encodes its image once. The server runs with
``OLLAMA_DEBUG=1``, so the runner's log says each time it reads or encodes an image.
"""

from __future__ import annotations

import base64
import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from runner.engine import Media, PromptTooLongError
from runner.media import build_prompt
from tests.support.server import Server, post, power_server, upload
from tests.support.synth import png, write_projector
from tests.support.wait import wait_until

pytestmark = pytest.mark.model

GREEDY = {"temperature": 0, "seed": 42, "num_predict": 8}
IMAGE_TOKENS = 4  # (32 px / 16 px patches)^2


@pytest.fixture
def vision(clean_env: dict[str, str], tmp_path: Path, smollm2_gguf: Path) -> Iterator[Server]:
    """``smol-vision`` (SmolLM2's GGUF and the projector) on a server that logs at DEBUG."""
    env = dict(clean_env, OLLAMA_MODELS=str(tmp_path / "models"), PYTHONUNBUFFERED="1",
               OLLAMA_DEBUG="1")  # fmt: skip
    with power_server(env, tmp_path / "server.log") as server:
        projector = write_projector(tmp_path / "mmproj.gguf")
        files = {
            "model.gguf": upload(server, smollm2_gguf),
            "mmproj.gguf": upload(server, projector),
        }
        body = {"model": "smol-vision", "files": files, "stream": False}
        created = post(server, "/api/create", body)
        assert created.status_code == 200, created.text
        yield server


def generate(server: Server, prompt: str, *images: bytes) -> httpx.Response:
    encoded = [base64.b64encode(i).decode() for i in images]
    body = {"model": "smol-vision", "prompt": prompt, "raw": True, "stream": False,
            "images": encoded, "options": GREEDY}  # fmt: skip
    return post(server, "/api/generate", body)


def peak_rss(pid: int) -> int:
    """The most memory the process has held at once (Linux's VmHWM), in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    assert found is not None, status
    return int(found[1]) << 10


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def gif_bomb(width: int, height: int) -> bytes:
    """43 bytes: a logical screen of ``width`` x ``height`` with one 1x1 frame."""
    return (
        b"GIF89a"
        + struct.pack("<HHBBB", width, height, 0x80, 0, 0)
        + b"\x00\x00\x00\xff\xff\xff"  # a 2-color palette
        + b"\x2c"
        + struct.pack("<HHHHB", 0, 0, 1, 1, 0)
        + b"\x02\x02\x44\x01\x00"  # one LZW-coded pixel
        + b"\x3b"
    )


def png_bomb(width: int, height: int) -> bytes:
    """A real grayscale PNG of zeros: ``width * height`` bytes deflate to a thousandth."""
    z = zlib.compressobj(9)
    row = b"\0" * (width + 1)
    data = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", data)
        + _chunk(b"IEND", b"")
    )


def jpeg_header(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof0 + b"\xff\xd9"


def bmp_header(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, -height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info), 0, 0, 14 + len(info)) + info


def webp_header(width: int, height: int) -> bytes:
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00"
    vp8x += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x


def test_an_image_claiming_too_many_pixels_is_a_400_before_it_is_decoded(vision: Server) -> None:
    ok = generate(vision, "[img-0] A photo of", png(40, 30, seed=1))
    assert ok.status_code == 200, ok.text
    (loaded,) = httpx.get(f"{vision.url}/api/ps").json()["models"]
    pid = loaded["pid"]
    before = peak_rss(pid)

    # 43 bytes that stb_image would decode into 12000x12000 RGBA pixels and more
    gif = generate(vision, "[img-0] A photo of", gif_bomb(12000, 12000))
    assert gif.status_code == 400, gif.text
    error = gif.json()["error"]
    assert "the GIF image is too large: 12000x12000 pixels (144.0 megapixels)" in error
    assert "at most 67.1 megapixels" in error

    # 140 KB of deflated zeros: 144 MB of gray pixels, three times that once decoded
    bomb = png_bomb(12000, 12000)
    assert len(bomb) < 200_000
    resp = generate(vision, "[img-0] A photo of", bomb)
    assert resp.status_code == 400, resp.text
    assert "the PNG image is too large: 12000x12000 pixels" in resp.json()["error"]
    assert peak_rss(pid) - before < 64 << 20  # (decoding either: 500 MB and more)

    for kind, claim in [("JPEG", jpeg_header), ("BMP", bmp_header), ("WEBP", webp_header)]:
        resp = generate(vision, "[img-0] A photo of", claim(30000, 20000))
        assert resp.status_code == 400, (kind, resp.text)
        assert f"the {kind} image is too large: 30000x20000 pixels" in resp.json()["error"]

    again = generate(vision, "[img-0] A photo of", png(40, 30, seed=1))
    assert again.status_code == 200, again.text
    assert [m["pid"] for m in httpx.get(f"{vision.url}/api/ps").json()["models"]] == [pid]


def with_text_chunk(image: bytes, n: int) -> bytes:
    """The same PNG pixels in other bytes: ``n`` text chunks before its end."""
    extra = b"".join(_chunk(b"tEXt", b"n\x00%d" % i) for i in range(n))
    return image[:-12] + extra + image[-12:]


def test_a_repeated_tag_reads_and_encodes_its_image_once(vision: Server) -> None:
    image = png(40, 30, seed=1)
    tags = " ".join(["[img-0]"] * 8)
    shared = generate(vision, f"Describe {tags} now.", image)
    assert shared.status_code == 200, shared.text
    assert shared.json()["prompt_eval_count"] >= 8 * IMAGE_TOKENS

    # the same pixels in 8 different files: each read and encoded on its own (the first one
    # excepted, which the cache holds from the prompt before) gives the same answer
    copies = [with_text_chunk(image, n) for n in range(8)]
    distinct = " ".join(f"[img-{n}]" for n in range(8))
    apart = generate(vision, f"Describe {distinct} now.", *copies)
    assert apart.status_code == 200, apart.text
    assert apart.json()["response"] == shared.json()["response"]

    # more tags than the context has positions: refused before any image is read
    many = generate(vision, "Look " + "[img-0] " * 9000 + "now.", png(36, 20, seed=2))
    assert many.status_code == 400, many.text
    assert "the prompt has 9000 image tags" in many.json()["error"]

    # the runner logs in order: once this image's line is in, so are all before it
    last = generate(vision, "[img-0] The end.", png(24, 24, seed=3))
    assert last.status_code == 200, last.text
    wait_until(lambda: "reading a png image of 24x24 pixels" in vision.log_text(), 30)
    log = vision.log_text()
    assert log.count("reading a png image of 40x30 pixels") == 1 + 8  # (not 8 + 8)
    assert log.count("reading a png image of 36x20 pixels") == 0
    assert log.count("encoded an image of 4 positions") == 1 + 7 + 1  # (not 8 + 7 + 1)


# ---------------------------------------------------------------------- build_prompt on its own
# (the engine passes ``limit``: the context left after the request's tokens)


class Made:
    """An encoded image of ``n_tokens`` positions that records its closing."""

    def __init__(self, n_tokens: int) -> None:
        self.n_tokens = n_tokens
        self.closed = False

    def close(self) -> None:
        self.closed = True


class Encoder:
    def __init__(self) -> None:
        self.made: list[Made] = []

    def __call__(self, data: bytes) -> list[list[int] | Media]:
        self.made.append(Made(4))
        return [[99], self.made[-1]]


def words(text: str, special: bool) -> list[int]:
    return ([1] if special else []) + [len(w) + 10 for w in text.split()]


def test_a_prompt_that_cannot_fit_stops_before_its_next_image_is_encoded() -> None:
    encode = Encoder()
    images = [bytes([n]) for n in range(10)]
    text = " ".join(f"see [img-{n}]" for n in range(10)) + " now"
    with pytest.raises(PromptTooLongError, match="prompt at least 19 tokens, context 16"):
        build_prompt(text, images, add_special=True, tokenize=words, encode=encode, limit=16)
    assert len(encode.made) == 3  # BOS, then 6 positions a tag and its text: 7, 13, 19
    assert all(m.closed for m in encode.made)


def test_the_spans_of_a_repeated_image_share_it_until_the_last_is_closed() -> None:
    encode = Encoder()
    prompt, spans = build_prompt("[img-0] [img-1] [img-0] [img-0] x", [b"a", b"b"],
                                 add_special=False, tokenize=words, encode=encode)  # fmt: skip
    assert len(encode.made) == 2
    assert len(spans) == 4
    assert [s.media.n_tokens for s in spans] == [4, 4, 4, 4]
    assert prompt[1:5] == prompt[11:15] == prompt[16:20] != prompt[6:10]
    first, other = encode.made
    spans[0].media.close()
    spans[2].media.close()
    spans[2].media.close()  # (twice: still one use)
    assert not first.closed
    spans[3].media.close()
    assert first.closed
    assert not other.closed
