"""Image files named in a prompt, for vision models: found, read and sent as ``images``.

Like Ollama's ``extractFileData``, a path in the prompt to a .png, .jpg, .jpeg, .gif, .bmp or
.webp file is read, taken out of the text and sent base64-encoded with the message. A path is
either quoted (``'my cat.png'``, ``"~/a b.jpg"``) or written bare from ``/``, ``./``, ``../``
or ``~/`` with spaces escaped (``/tmp/my\\ cat.png``), as a shell's drag-and-drop writes it.
Unlike Ollama, which silently sends the text when such a file is missing, a path that names no
readable image is an error, so the model is never asked about a picture it did not get.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ImageError", "Prompt", "extract_images", "starts_with_image"]

MAX_IMAGE_BYTES = 100 * 1024 * 1024  # Ollama's limit
_EXT = r"\.(?:png|jpe?g|gif|bmp|webp)"
_PATH = re.compile(
    rf"""'(?P<single>[^']+?{_EXT})'
       |"(?P<double>[^"]+?{_EXT})"
       |(?:(?<=\s)|^)(?P<bare>(?:~|\.\.?)?/(?:\\.|[^\s\\])*?{_EXT})(?=$|\s|[,;:!?)])
    """,
    re.IGNORECASE | re.VERBOSE,
)
_ESCAPE = re.compile(r"\\(.)")
_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM")  # WebP: RIFF


class ImageError(Exception):
    """A path in the prompt names no readable image; str() is the one-line message."""


@dataclass
class Prompt:
    """A prompt's text with the image paths taken out, and the images as base64."""

    text: str
    images: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)


def _is_image(head: bytes) -> bool:
    return head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def _read(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise ImageError(f"couldn't add image '{path}': larger than 100 MB")
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"couldn't add image '{path}': {exc.strerror or exc}") from exc
    if not _is_image(data[:16]):
        raise ImageError(f"couldn't add image '{path}': not a PNG, JPEG, GIF, BMP or WebP image")
    return data


def extract_images(text: str) -> Prompt:
    """Find, read and remove the image paths in ``text``; raise `ImageError` for a bad one."""
    prompt = Prompt(text)
    kept: list[str] = []
    last = 0
    for match in _PATH.finditer(text):
        raw = match["single"] or match["double"] or _ESCAPE.sub(r"\1", match["bare"])
        path = Path(raw).expanduser()
        prompt.images.append(base64.b64encode(_read(path)).decode("ascii"))
        prompt.paths.append(path)
        kept.append(text[last : match.start()])
        last = match.end()
    kept.append(text[last:])
    if prompt.paths:
        prompt.text = re.sub(r"[ \t]{2,}", " ", "".join(kept)).strip()
    return prompt


def starts_with_image(line: str) -> bool:
    """True when ``line`` begins with a bare image path (so ``/tmp/x.png`` is no command)."""
    match = _PATH.match(line)
    return match is not None and match["bare"] is not None
