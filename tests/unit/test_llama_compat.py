"""Writes to llama.cpp's parameter structs are checked; untested releases are refused."""

from __future__ import annotations

import ctypes

import llama_cpp
import pytest

from runner.llama_compat import (
    TESTED_VERSIONS,
    UnsupportedEngineError,
    check_version,
    installed_version,
    set_fields,
)
from runner.llama_params import load_mode


def test_a_field_the_struct_has_is_written() -> None:
    params = llama_cpp.llama_model_default_params()
    set_fields(params, use_extra_bufts=False, load_mode=llama_cpp.LLAMA_LOAD_MODE_NONE)
    assert params.use_extra_bufts is False
    assert params.load_mode == llama_cpp.LLAMA_LOAD_MODE_NONE


@pytest.mark.parametrize("name", ["use_mmap", "use_mlock", "n_gpu_layer"])
def test_a_field_the_struct_lacks_is_refused_and_nothing_is_written(name: str) -> None:
    params = llama_cpp.llama_model_default_params()
    before = bytes(params)
    with pytest.raises(UnsupportedEngineError) as err:
        set_fields(params, n_gpu_layers=7, **{name: True})
    message = str(err.value)
    assert f"llama_model_params has no field {name!r}" in message
    assert f"llama-cpp-python {installed_version()}" in message
    assert bytes(params) == before  # not even the good field: all or nothing
    assert name not in vars(params)


def test_plain_ctypes_would_have_dropped_the_setting_silently() -> None:
    params = llama_cpp.llama_model_default_params()
    params.use_mlock = True  # what the runner used to do: no error, and llama.cpp sees nothing
    assert bytes(params) == bytes(llama_cpp.llama_model_default_params())


def test_fields_of_a_nested_struct_are_checked_too() -> None:
    class Inner(ctypes.Structure):
        _fields_ = (("a", ctypes.c_int),)

    class Outer(Inner):
        _fields_ = (("b", ctypes.c_int),)

    value = Outer()
    set_fields(value, a=1, b=2)
    assert (value.a, value.b) == (1, 2)
    with pytest.raises(UnsupportedEngineError, match="Outer has no field 'c'"):
        set_fields(value, c=3)


@pytest.mark.parametrize(
    ("use_mmap", "use_mlock", "mode"),
    [
        (True, False, llama_cpp.LLAMA_LOAD_MODE_AUTO),
        (True, True, llama_cpp.LLAMA_LOAD_MODE_MMAP_MLOCK),
        (False, True, llama_cpp.LLAMA_LOAD_MODE_MLOCK),
        (False, False, llama_cpp.LLAMA_LOAD_MODE_NONE),
    ],
)
def test_use_mmap_and_use_mlock_become_load_mode(
    use_mmap: bool, use_mlock: bool, mode: int
) -> None:
    assert load_mode(use_mmap=use_mmap, use_mlock=use_mlock) == mode


def test_the_installed_release_is_a_tested_one() -> None:
    assert installed_version() in TESTED_VERSIONS
    assert llama_cpp.__version__ == installed_version()
    check_version(installed_version())


def test_an_untested_release_is_refused_with_what_to_install() -> None:
    with pytest.raises(UnsupportedEngineError) as err:
        check_version("0.3.99")
    assert "llama-cpp-python 0.3.99 is installed" in str(err.value)
    assert f"install llama-cpp-python=={TESTED_VERSIONS[-1]}" in str(err.value)
