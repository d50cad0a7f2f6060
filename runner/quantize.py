"""``python -m runner.quantize SRC DST TYPE [--allow-requantize]``: llama.cpp's quantizer, as
the gateway's child.

``TYPE`` is llama.cpp's ``LLAMA_FTYPE_MOSTLY_*`` suffix (``Q4_K_M``). The quantizer logs a line
per tensor (``[  12/ 272] blk.0…``) on stderr, which the gateway turns into progress. Exit
codes: 0 done, 1 the quantizer failed, 2 bad arguments or llama-cpp-python unusable.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys

from runner.llama_compat import UnsupportedEngineError, check_version, installed_version

__all__ = ["main"]


def main(argv: list[str]) -> int:
    requantize = argv[3:] == ["--allow-requantize"]
    if len(argv) - requantize != 3:
        sys.stderr.write("usage: python -m runner.quantize SRC DST TYPE [--allow-requantize]\n")
        return 2
    src, dst, qtype = argv[:3]
    try:
        check_version(installed_version())
    except UnsupportedEngineError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    import llama_cpp

    from runner.llama_compat import set_fields

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype.upper()}", None)
    if ftype is None:
        sys.stderr.write(f"unknown quantization type {qtype}\n")
        return 2
    params = llama_cpp.llama_model_quantize_default_params()
    set_fields(
        params,
        ftype=ftype,
        nthread=max(1, (os.cpu_count() or 2) // 2),
        allow_requantize=requantize,
    )
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    if rc != 0:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(dst)
        sys.stderr.write(f"llama_model_quantize returned {rc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
