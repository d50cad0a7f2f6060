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
"""

from __future__ import annotations

import ctypes
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import llama_cpp
from llama_cpp import mtmd_cpp as mtmd

from runner.engine import BadRequestError, EngineError, Media, Span
from runner.llama_compat import set_fields
from runner.media import build_prompt
from runner.native_log import mtmd_log

__all__ = ["ImageChunk", "Projector", "image_format"]

_NO_FFMPEG = b"/nonexistent/a3s-power/no-ffmpeg"


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


class ImageChunk:
    """One image chunk of an encoded image, owned here and freed once."""

    __slots__ = ("__weakref__", "_free", "chunk", "n_tokens")

    def __init__(self, chunk: Any) -> None:
        self.chunk = chunk
        self.n_tokens: int = mtmd.mtmd_input_chunk_get_n_tokens(chunk)
        self._free = weakref.finalize(self, mtmd.mtmd_input_chunk_free, chunk)

    def close(self) -> None:
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
    ) -> tuple[list[int], list[Span]]:
        """``text`` tokenized with ``tokenize`` (the engine's), its ``[img-N]`` tags encoded."""
        return build_prompt(
            text,
            images,
            add_special=add_special,
            tokenize=lambda t, special: tokenize(t, add_special=special, parse_special=True),
            encode=self.encode,
        )

    def encode(self, data: bytes) -> Sequence[list[int] | Media]:
        """The image ``data`` as llama.cpp feeds it to the model: text tokens (a model's image
        delimiters, if any) and image chunks, in order. ``BadRequestError`` if unreadable."""
        kind = image_format(data)
        if kind is None:
            raise BadRequestError("unsupported image format: expected JPEG, PNG, GIF, BMP or WebP")
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
        end = llama_cpp.llama_pos(pos)
        rc = mtmd.mtmd_helper_eval_chunk_single(
            self._ctx, lctx, media.chunk, pos, seq, n_batch, False, ctypes.byref(end)
        )
        if rc != 0:
            why = self._log.take() or f"status {rc}"
            raise EngineError(f"failed to evaluate the image: {why}")
