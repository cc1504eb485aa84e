"""The decode thread's quick llama.cpp calls keep the GIL (engines/llama_gil.py): the same
C functions with the same signatures, called through a PyDLL handle; everything else
is the llama_cpp module's own; where the library cannot be opened so, the module."""

from __future__ import annotations

import ctypes
import logging
from types import SimpleNamespace

import llama_cpp
import pytest

from inferq.engines.llama_gil import QUICK, holding_gil


def _address(function: object) -> int | None:
    return ctypes.cast(function, ctypes.c_void_p).value


def test_the_quick_calls_are_the_same_functions_and_keep_the_gil() -> None:
    lib = holding_gil(llama_cpp)
    for name in QUICK:
        own, twin = getattr(llama_cpp, name), getattr(lib, name)
        assert _address(twin) == _address(own), name
        assert (twin.argtypes, twin.restype) == (own.argtypes, own.restype), name
        # a PyDLL function is called holding the GIL; the module's (CDLL) let go of it
        assert twin._flags_ & ctypes._FUNCFLAG_PYTHONAPI, name  # type: ignore[attr-defined]
        assert not own._flags_ & ctypes._FUNCFLAG_PYTHONAPI, name  # type: ignore[attr-defined]


def test_every_other_name_is_the_modules_own() -> None:
    lib = holding_gil(llama_cpp)
    assert lib.llama_decode is llama_cpp.llama_decode
    assert lib.llama_batch_init is llama_cpp.llama_batch_init
    with pytest.raises(AttributeError):
        _ = lib.no_such_function


def test_a_library_that_cannot_be_opened_leaves_the_module(
    caplog: pytest.LogCaptureFixture,
) -> None:
    module = SimpleNamespace(llama_cpp=SimpleNamespace(_lib=SimpleNamespace(_name="/no/such.so")))
    with caplog.at_level(logging.WARNING, logger="inferq.engines.llamacpp"):
        assert holding_gil(module) is module
    assert "quick calls will let go of the GIL" in caplog.text
