"""A model's vision projector through llama.cpp's multimodal library (mtmd).

``Projector`` loads an mmproj GGUF against the loaded text model, turns an image's bytes into
mtmd chunks (``encode``) and evaluates one image chunk into a sequence's KV cache at a position
(``decode``): the vision encoder runs, then llama.cpp decodes its embeddings for that sequence,
with the attention mask mtmd's helper chooses for the model. Like every llama.cpp call, all of
it runs on the runner's inference thread.

Images are checked by their first bytes before llama.cpp sees them: JPEG, PNG, GIF and BMP are
decoded by llama.cpp's stb_image, WebP by the ffmpeg binary when llama.cpp finds one on PATH.
Anything else is refused here, and a broken image of the other formats gets no ffmpeg to fall
back to, so arbitrary bytes never reach llama.cpp's video decoder (which runs ffmpeg on them).

Their size is checked too, from the header, before anything is decoded: stb_image allocates
what the header claims, with no limit of its own, so a 43-byte GIF that claims 23000x23000
pixels costs 3 GB and seconds of the inference thread. The headers are read here rather than
with stb's ``stbi_info_from_memory``: libmtmd exports that only as a side effect of how it is
linked, and it knows nothing of WebP.

An image chunk evaluated more than once (its tag repeated in the prompt) runs the vision
encoder once: the chunk keeps its embeddings for the next time.
"""

from __future__ import annotations

import ctypes
import logging
import struct
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import llama_cpp
from llama_cpp import mtmd_cpp as mtmd

from runner.engine import BadRequestError, EngineError, Media, Span
from runner.llama_compat import set_fields
from runner.media import build_prompt
from runner.native_log import mtmd_log

__all__ = ["MAX_IMAGE_PIXELS", "ImageChunk", "Projector", "image_format", "image_size"]

log = logging.getLogger(__name__)

_NO_FFMPEG = b"/nonexistent/a3s-power/no-ffmpeg"

# The most pixels an image may have: 2**26, 67 megapixels, room for a 64 MP camera's 9248x6936
# photo. Decoding one that large takes a few hundred MB for a moment; every projector scales it
# down to well under a megapixel anyway. (Ollama has no such limit; Pillow warns at 89 MP.)
MAX_IMAGE_PIXELS = 1 << 26
_JPEG_SEGMENTS = 4096  # markers read before the frame header: real files have a few dozen
# JPEG frame headers (SOF0..SOF15), not DHT (C4), JPG (C8) or DAC (CC)
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def image_format(data: bytes) -> str | None:
    """The image format ``data`` starts like, among those a projector can decode, else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if data.startswith(b"BM") and len(data) > 26:
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def image_size(data: bytes, kind: str) -> tuple[int, int] | None:
    """The width and height the header of ``data`` (an image of format ``kind``) claims, read
    without decoding it; None when the header is cut short or malformed."""
    try:
        return _READ_SIZE[kind](data)
    except (struct.error, IndexError):
        return None


def _png_size(data: bytes) -> tuple[int, int] | None:
    pos = 8
    for _ in range(2):  # IHDR comes first, or second after Apple's CgBI (stb reads both)
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"IHDR":
            width, height = struct.unpack_from(">II", data, pos + 8)
            return width, height
        if kind != b"CgBI":
            return None
        pos += 12 + length
    return None


def _gif_size(data: bytes) -> tuple[int, int]:
    width, height = struct.unpack_from("<HH", data, 6)  # the logical screen: stb allocates it
    return width, height


def _bmp_size(data: bytes) -> tuple[int, int]:
    if struct.unpack_from("<I", data, 14)[0] == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        width, height = struct.unpack_from("<HH", data, 18)
        return width, height
    width, height = struct.unpack_from("<Ii", data, 18)
    return width, abs(height)  # (negative: stored top-down)


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    pos = 2
    for _ in range(_JPEG_SEGMENTS):
        pos = data.find(b"\xff", pos)  # (a decoder skips stray bytes between segments)
        if pos < 0:
            return None
        while data[pos] == 0xFF:  # fill bytes
            pos += 1
        marker = data[pos]
        pos += 1
        if marker in _JPEG_SOF:
            height, width = struct.unpack_from(">HH", data, pos + 3)
            return width, height
        if marker in (0xD9, 0xDA):  # the end, or the scan, before any frame header
            return None
        if not (0xD0 <= marker <= 0xD7 or marker == 0x01):  # (those have no length)
            pos += struct.unpack_from(">H", data, pos)[0]
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:  # extended: the canvas, less one, 24 bits each
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":  # lossy: 14 bits each
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and data[20] == 0x2F:  # lossless: 14 bits each, less one
        bits = struct.unpack_from("<I", data, 21)[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


_READ_SIZE = {
    "png": _png_size,
    "jpeg": _jpeg_size,
    "gif": _gif_size,
    "bmp": _bmp_size,
    "webp": _webp_size,
}


class ImageChunk:
    """One image chunk of an encoded image, owned here and freed once; once evaluated, it keeps
    the vision encoder's output (``embd``) for another evaluation of the same chunk."""

    __slots__ = ("__weakref__", "_free", "chunk", "embd", "n_tokens")

    def __init__(self, chunk: Any) -> None:
        self.chunk = chunk
        self.n_tokens: int = mtmd.mtmd_input_chunk_get_n_tokens(chunk)
        self.embd: ctypes.Array[ctypes.c_float] | None = None
        self._free = weakref.finalize(self, mtmd.mtmd_input_chunk_free, chunk)

    def close(self) -> None:
        self.embd = None
        self._free()


class Projector:
    def __init__(
        self, path: str, model: Any, *, n_threads: int, use_gpu: bool, flash_attn: int
    ) -> None:
        self._log = mtmd_log()
        self._log.take()
        params = mtmd.mtmd_context_params_default()
        set_fields(
            params,
            n_threads=n_threads,
            use_gpu=use_gpu,
            print_timings=False,
            flash_attn_type=flash_attn,
        )
        self._n_embd = llama_cpp.llama_model_n_embd_inp(model)  # (an embedding's width)
        ctx = mtmd.mtmd_init_from_file(path.encode(), model, params)
        if not ctx:
            why = self._log.take() or "see the runner's log"
            raise EngineError(f"failed to load the vision projector {path}: {why}")
        self._ctx = ctx
        if not mtmd.mtmd_support_vision(ctx):
            self.close()
            raise EngineError(f"the projector {path} has no vision encoder")
        if mtmd.mtmd_decode_use_mrope(ctx):
            # Its positions advance by less than its tokens; the slots assume one per token.
            self.close()
            raise EngineError(f"the projector {path} needs M-RoPE positions, not supported yet")

    def close(self) -> None:
        if self._ctx:
            mtmd.mtmd_free(self._ctx)
            self._ctx = None

    def prompt(
        self,
        text: str,
        images: Sequence[bytes],
        *,
        add_special: bool,
        tokenize: Callable[..., list[int]],
        limit: int = 0,
    ) -> tuple[list[int], list[Span]]:
        """``text`` tokenized with ``tokenize`` (the engine's), its ``[img-N]`` tags encoded
        (``build_prompt``: refused as soon as it reaches ``limit`` positions)."""
        return build_prompt(
            text,
            images,
            add_special=add_special,
            tokenize=lambda t, special: tokenize(t, add_special=special, parse_special=True),
            encode=self.encode,
            limit=limit,
        )

    def encode(self, data: bytes) -> Sequence[list[int] | Media]:
        """The image ``data`` as llama.cpp feeds it to the model: text tokens (a model's image
        delimiters, if any) and image chunks, in order. ``BadRequestError`` if unreadable."""
        kind = image_format(data)
        if kind is None:
            raise BadRequestError("unsupported image format: expected JPEG, PNG, GIF, BMP or WebP")
        size = image_size(data, kind)
        if size is None:
            raise BadRequestError(
                f"failed to decode the {kind.upper()} image: the data is damaged or truncated"
            )
        width, height = size
        if width * height > MAX_IMAGE_PIXELS:
            raise BadRequestError(
                f"the {kind.upper()} image is too large: {width}x{height} pixels"
                f" ({width * height / 1e6:.1f} megapixels), at most"
                f" {MAX_IMAGE_PIXELS / 1e6:.1f} megapixels are accepted; scale it down"
            )
        log.debug("reading a %s image of %dx%d pixels (%d bytes)", kind, width, height, len(data))
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        opt = mtmd.mtmd_helper_init_opt_default()
        if kind != "webp":  # a broken image must not fall through to the ffmpeg video decoder
            set_fields(opt.video_params, ffmpeg_bin_dir=_NO_FFMPEG)
        self._log.take()
        got = mtmd.mtmd_helper_bitmap_init_from_buf_wrapper(self._ctx, buf, len(data), False, opt)
        if got.video_ctx:
            mtmd.mtmd_helper_video_free(got.video_ctx)
        if not got.bitmap or got.video_ctx:
            if got.bitmap:
                mtmd.mtmd_bitmap_free(got.bitmap)
            why = self._log.take()  # (for WebP: whether ffmpeg could be run)
            if kind != "webp" or not why:
                why = "the data is damaged or truncated"
            raise BadRequestError(f"failed to decode the {kind.upper()} image: {why}")
        chunks = mtmd.mtmd_input_chunks_init()
        try:
            part = mtmd.mtmd_input_part(text=None, bitmap=got.bitmap)
            parts = (ctypes.POINTER(mtmd.mtmd_input_part) * 1)(ctypes.pointer(part))
            rc = mtmd.mtmd_tokenize_from_parts(self._ctx, chunks, parts, 1, False)
            if rc != 0:
                why = self._log.take() or f"status {rc}"
                raise BadRequestError(f"failed to prepare the image: {why}")
            return [
                self._part(mtmd.mtmd_input_chunks_get(chunks, i))
                for i in range(mtmd.mtmd_input_chunks_size(chunks))
            ]
        finally:
            mtmd.mtmd_input_chunks_free(chunks)
            mtmd.mtmd_bitmap_free(got.bitmap)

    @staticmethod
    def _part(chunk: Any) -> list[int] | Media:
        if mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
            n = ctypes.c_size_t(0)
            tokens = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
            return [tokens[i] for i in range(n.value)]
        return ImageChunk(mtmd.mtmd_input_chunk_copy(chunk))

    def decode(self, lctx: Any, media: Media, seq: int, pos: int, n_batch: int) -> None:
        if not isinstance(media, ImageChunk):
            raise EngineError(f"not an image chunk of this projector: {media!r}")
        self._log.take()
        if media.embd is None:
            rc = mtmd.mtmd_encode_chunk(self._ctx, media.chunk)
            out = mtmd.mtmd_get_output_embd(self._ctx)
            if rc != 0 or not out:
                why = self._log.take() or f"status {rc}"
                raise EngineError(f"failed to encode the image: {why}")
            n = media.n_tokens * self._n_embd
            media.embd = (ctypes.c_float * n)()  # (mtmd's own buffer is the next image's)
            ctypes.memmove(media.embd, out, n * ctypes.sizeof(ctypes.c_float))
            log.debug("encoded an image of %d positions", media.n_tokens)
        end = llama_cpp.llama_pos(pos)
        rc = mtmd.mtmd_helper_decode_image_chunk(
            self._ctx, lctx, media.chunk, media.embd, pos, seq, n_batch, ctypes.byref(end),
            mtmd.mtmd_helper_post_decode_callback(), None,
        )  # fmt: skip
        if rc != 0:
            why = self._log.take() or f"status {rc}"
            raise EngineError(f"failed to evaluate the image: {why}")
