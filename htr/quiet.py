"""Native libraries kept quiet: what C or C++ code (KenLM inside flashlight-text) writes straight to the process's
file descriptors stays off the user's terminal unless ``--verbose`` (``HTR_DEBUG=1``). Imports nothing heavy, so
that reading a model with a beam search does not load the training stack.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator


def is_verbose() -> bool:
    """``htr --verbose`` (which sets it) or ``HTR_DEBUG=1``: let native libraries print."""
    return os.environ.get("HTR_DEBUG") == "1"


def _flush_native_stdio() -> None:
    """Flushes C's stdio buffers, so that what native code wrote goes where its file descriptor points now."""
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError, TypeError):  # no C library to call (Windows: msvcrt), nothing to flush
        pass


@contextlib.contextmanager
def quiet_native_output() -> Iterator[None]:
    """While the block runs, file descriptors 1 and 2 (stdout, stderr) point to the null device, so that what C or
    C++ code prints there (KenLM, flashlight) does not reach the terminal; with ``--verbose`` it does nothing.

    Python's ``sys.stdout``/``sys.stderr`` are flushed first, so nothing written before is lost; what anything
    (other threads, a line-buffered Python print) writes to the two descriptors during the block is: keep the
    block to the native call.
    """
    if is_verbose():
        yield
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or replaced stream
            stream.flush()
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # no stdout or stderr to silence (a daemon)
        yield
        return
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 1)
            os.dup2(null, 2)
        finally:
            os.close(null)
        try:
            yield
        finally:
            _flush_native_stdio()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
    finally:
        for fd in saved:
            os.close(fd)
