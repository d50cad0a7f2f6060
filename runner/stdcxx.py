"""The C++ runtime in the process's global symbol scope before llama.cpp's libraries.

A CUDA build of llama-cpp-python's ``libggml-cuda.so`` carries its own copy of part of the C++
runtime (locale facets among it) and exports those symbols, and llama-cpp-python opens its
libraries with ``RTLD_GLOBAL``. Where that copy comes ahead of ``libstdc++`` in the global scope,
``libllama`` (which binds its calls lazily, at first use) sends its tokenizer's ``std::regex``
into the copy's uninitialised locale, and the load dies of SIGSEGV: seen in every runner on an
H200 (CUDA 13, llama-cpp-python 0.3.36), with ``num_gpu 0`` too, and gone with
``LD_PRELOAD=libstdc++.so.6``. Opening ``libstdc++`` globally first does the same from inside:
every such lookup then finds the one shared runtime.
"""

from __future__ import annotations

import ctypes

__all__ = ["load_stdcxx_first"]

_kept: list[ctypes.CDLL] = []


def load_stdcxx_first() -> None:
    """Open the C++ runtime with ``RTLD_GLOBAL``; nothing if it cannot be found. By its soname
    first: ``find_library`` runs ``ldconfig -p`` (a process, ~2 ms of every runner's start)."""
    try:
        _kept.append(ctypes.CDLL("libstdc++.so.6", mode=ctypes.RTLD_GLOBAL))
        return
    except OSError:
        pass
    from ctypes.util import find_library  # (only here: it imports subprocess and more)

    name = find_library("stdc++")
    if name:
        try:
            _kept.append(ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL))
        except OSError:
            pass  # (no shared C++ runtime: one linked statically has nothing to put first)
