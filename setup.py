"""Build acsleuth._C: the C++ (OpenMP) kernels always, the CUDA kernels when possible.

ACSLEUTH_BUILD_CUDA=0|1 overrides the automatic CUDA decision.
"""

from __future__ import annotations

import os
from glob import glob

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _say(msg: str) -> None:
    print(f"[acsleuth setup] {msg}", flush=True)


def _want_cuda() -> bool:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    flag = os.environ.get("ACSLEUTH_BUILD_CUDA")
    if flag is not None:
        _say(f"ACSLEUTH_BUILD_CUDA={flag}: CUDA kernels {'on' if flag == '1' else 'off'}")
        return flag == "1"
    if torch.version.cuda is None:
        _say("torch has no CUDA support: building CPU kernels only")
        return False
    if CUDA_HOME is None:
        _say("nvcc not found (CUDA_HOME unset): building CPU kernels only")
        return False
    _say(f"torch CUDA {torch.version.cuda}, nvcc in {CUDA_HOME}: building CUDA kernels")
    return True


def _extensions():
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    cpp = sorted(glob(os.path.join("csrc", "**", "*.cpp"), recursive=True))
    cxx = ["-O3", "-fopenmp", "-std=c++20"]
    if not _want_cuda():
        return [
            CppExtension(
                "acsleuth._C",
                cpp,
                include_dirs=[os.path.join(ROOT, "csrc")],
                extra_compile_args={"cxx": cxx},
                extra_link_args=["-fopenmp"],
            )
        ]
    cu = sorted(glob(os.path.join("csrc", "**", "*.cu"), recursive=True))
    arch = os.environ.get("TORCH_CUDA_ARCH_LIST")
    _say(f"CUDA architectures: {arch or 'torch default for the visible GPUs'}")
    return [
        CUDAExtension(
            "acsleuth._C",
            cpp + cu,
            include_dirs=[os.path.join(ROOT, "csrc")],
            define_macros=[("ACSLEUTH_WITH_CUDA", None)],
            extra_compile_args={
                "cxx": cxx,
                "nvcc": ["-O3", "-std=c++20", "--expt-relaxed-constexpr"],
            },
            extra_link_args=["-fopenmp"],
        )
    ]


def main() -> None:
    from torch.utils.cpp_extension import BuildExtension

    setup(
        ext_modules=_extensions(),
        cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    )


if __name__ == "__main__":
    main()
