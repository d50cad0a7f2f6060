"""ggml's GGUF reader through ctypes: the block count the RPC split shares out, before a load."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.ggml_api import GgufError, block_count

pytestmark = pytest.mark.model


def test_block_count_is_read_from_the_header(smollm2_gguf: Path) -> None:
    assert block_count(str(smollm2_gguf)) == 30  # SmolLM2-135M: 30 blocks


def test_a_file_that_is_not_gguf_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "not.gguf"
    path.write_bytes(b"root:x:0:0\n" * 8)
    with pytest.raises(GgufError, match="not a GGUF file"):
        block_count(str(path))
