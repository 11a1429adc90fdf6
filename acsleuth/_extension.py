"""Load the compiled ``acsleuth._C`` ops library, JIT-building it when it is absent.

Order: the library built by ``setup.py`` next to this file; else a ninja JIT build of
``csrc/`` (source checkouts only) into ``$ACSLEUTH_CACHE`` (default
``~/.cache/acsleuth``); else one warning and the pure-PyTorch fallbacks. Never raises.
``ACSLEUTH_PREBUILT=0`` ignores the installed library (e.g. to rebuild edited sources);
``ACSLEUTH_JIT=0`` skips the JIT build.
"""

from __future__ import annotations

import glob
import importlib.machinery
import logging
import os
import warnings
from pathlib import Path

import torch

log = logging.getLogger("acsleuth")

_PACKAGE_DIR = Path(__file__).resolve().parent
_CSRC = _PACKAGE_DIR.parent / "csrc"

HAS_OPS = False
HAS_CUDA_OPS = False
LOAD_ERROR: str | None = None


def _prebuilt_library() -> Path | None:
    if os.environ.get("ACSLEUTH_PREBUILT", "1") == "0":
        return None
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = _PACKAGE_DIR / f"_C{suffix}"
        if candidate.exists():
            return candidate
    return None


def _jit_build() -> None:
    from torch.utils.cpp_extension import CUDA_HOME, load

    if not _CSRC.is_dir():
        raise RuntimeError(f"no compiled library and no sources at {_CSRC} to build from")
    sources = sorted(glob.glob(str(_CSRC / "**" / "*.cpp"), recursive=True))
    with_cuda = torch.cuda.is_available() and CUDA_HOME is not None
    if with_cuda:
        sources += sorted(glob.glob(str(_CSRC / "**" / "*.cu"), recursive=True))
    cache = Path(os.environ.get("ACSLEUTH_CACHE", Path.home() / ".cache" / "acsleuth"))
    build_dir = cache / f"torch-{torch.__version__}-{'cuda' if with_cuda else 'cpu'}"
    build_dir.mkdir(parents=True, exist_ok=True)
    log.warning("acsleuth: compiling the C++ ops (first import only) into %s", build_dir)
    load(
        name="acsleuth_C",
        sources=sources,
        extra_include_paths=[str(_CSRC)],
        extra_cflags=["-O3", "-fopenmp", "-std=c++20"]
        + (["-DACSLEUTH_WITH_CUDA"] if with_cuda else []),
        extra_cuda_cflags=["-O3", "-std=c++20", "--expt-relaxed-constexpr"],
        extra_ldflags=["-fopenmp"],
        build_directory=str(build_dir),
        is_python_module=False,
        verbose=False,
    )


def _cuda_kernels_registered() -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key("acsleuth::kin_topk", "CUDA")


def load() -> bool:
    """Load the ops library once; return whether the compiled ops are available."""
    global HAS_OPS, HAS_CUDA_OPS, LOAD_ERROR
    if HAS_OPS or LOAD_ERROR is not None:
        return HAS_OPS
    try:
        library = _prebuilt_library()
        if library is not None:
            torch.ops.load_library(str(library))
        elif os.environ.get("ACSLEUTH_JIT", "1") != "0":
            _jit_build()
        else:
            raise RuntimeError("no compiled library and ACSLEUTH_JIT=0")
        HAS_OPS = True
        HAS_CUDA_OPS = _cuda_kernels_registered()
    except Exception as exc:  # any failure means: run on the PyTorch fallbacks
        LOAD_ERROR = f"{type(exc).__name__}: {exc}"
        warnings.warn(
            "acsleuth: compiled ops unavailable, using the (slower) PyTorch fallbacks. "
            f"Reason: {LOAD_ERROR}. Reinstall with `make setup` to build them.",
            RuntimeWarning,
            stacklevel=2,
        )
    return HAS_OPS
