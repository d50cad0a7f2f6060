"""The runner opens the C++ runtime globally before llama.cpp's libraries (``runner.stdcxx``).

A CUDA build's ``libggml-cuda.so`` exports its own copy of C++ runtime symbols, and whatever the
process's global scope reaches first is what ``libllama`` binds to. A stand-in library that
exports ``std::locale::classic()`` plays ``libggml-cuda`` here: opened globally into a process
that has no C++ runtime yet, it wins the lookup; opened after the runner's start, it does not.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or shutil.which("cc") is None,
    reason="glibc's global symbol scope, and a C compiler to build the stand-in",
)

SYMBOL = "_ZNSt6locale7classicEv"  # std::locale::classic()

# which object the process's global scope gives SYMBOL from, after the stand-in opens globally
_WHO_WINS = f"""
import ctypes
ctypes.CDLL(standin, mode=ctypes.RTLD_GLOBAL)
libc = ctypes.CDLL(None)
libc.dlsym.restype = ctypes.c_void_p
libc.dlsym.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
addr = libc.dlsym(None, b"{SYMBOL}")  # RTLD_DEFAULT
class Info(ctypes.Structure):
    _fields_ = [("fname", ctypes.c_char_p), ("fbase", ctypes.c_void_p),
                ("sname", ctypes.c_char_p), ("saddr", ctypes.c_void_p)]
info = Info()
libc.dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(Info)]
assert addr and libc.dladdr(addr, ctypes.byref(info))
print(info.fname.decode())
"""


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("standin") / "standin.c"
    src.write_text(
        f'void *standin(void) __asm__("{SYMBOL}");\nvoid *standin(void) {{ return 0; }}\n'
    )
    lib = src.with_suffix(".so")
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    return lib


def _who_wins(standin: Path, before: str) -> str:
    code = "import sys\nstandin = sys.argv[1]\n" + before + "\n" + _WHO_WINS
    out = subprocess.run(
        [sys.executable, "-c", code, str(standin)],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return Path(out.stdout.strip()).name


def test_without_the_runtime_first_the_stand_in_wins(standin: Path) -> None:
    assert _who_wins(standin, "") == "standin.so"


def test_after_load_stdcxx_first_the_shared_runtime_wins(standin: Path) -> None:
    before = "from runner.stdcxx import load_stdcxx_first\nload_stdcxx_first()"
    assert _who_wins(standin, before).startswith("libstdc++.so")


@pytest.mark.parametrize(
    ("module", "args"),
    [("runner", ["--help"]), ("runner.rpc_worker", [])],  # each stops at its arguments
)
def test_each_entry_point_opens_it_before_anything_else(
    standin: Path, module: str, args: list[str]
) -> None:
    """``python -m runner`` and ``python -m runner.rpc_worker`` (the RPC worker loads the same
    libraries) have the runtime in place before they look at their arguments."""
    before = (
        "import contextlib, io, runpy, sys\n"
        f"sys.argv = [{module!r}, *{args!r}]\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        f"    runpy.run_module({module!r}, run_name='__main__')"
    )
    assert _who_wins(standin, before).startswith("libstdc++.so")
