#!/usr/bin/env bash
# Compile-check every csrc/ops/cuda/*.cu with nvcc for sm_80 and sm_90 (no GPU needed).
# Exits non-zero if any file fails; exits 0 with a message when nvcc is absent.
set -u

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NVCC="${NVCC:-$(command -v nvcc || true)}"
if [[ -z "$NVCC" && -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ]]; then
  NVCC="${CUDA_HOME:-/usr/local/cuda}/bin/nvcc"
fi
if [[ -z "$NVCC" ]]; then
  echo "check_nvcc: nvcc not found; skipping CUDA compile check"
  exit 0
fi

PY="${PYTHON:-python}"
TORCH_INC="$("$PY" -c \
  'import torch,os; print(os.path.join(os.path.dirname(torch.__file__), "include"))')"
if [[ -z "$TORCH_INC" || ! -d "$TORCH_INC" ]]; then
  echo "check_nvcc: could not find torch's include directory with $PY" >&2
  exit 1
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# The CPU torch wheel lacks this generated header; provide it.
mkdir -p "$WORK/shim/c10/cuda/impl"
printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' \
  >"$WORK/shim/c10/cuda/impl/cuda_cmake_macros.h"

FLAGS=(-std=c++20 --expt-relaxed-constexpr -O3 -Xcompiler -fPIC
       -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90
       -I "$ROOT/csrc" -I "$TORCH_INC" -I "$TORCH_INC/torch/csrc/api/include" -I "$WORK/shim"
       -D_GLIBCXX_USE_CXX11_ABI=1)

shopt -s nullglob
FILES=("$ROOT"/csrc/ops/cuda/*.cu)
if [[ ${#FILES[@]} -eq 0 ]]; then
  echo "check_nvcc: no .cu files under csrc/ops/cuda"
  exit 0
fi

compile() {
  local src="$1" name
  name="$(basename "$src" .cu)"
  if "$NVCC" "${FLAGS[@]}" -c "$src" -o "$WORK/$name.o" >"$WORK/$name.log" 2>&1; then
    echo "OK    ${src#"$ROOT"/}"
  else
    echo "FAIL  ${src#"$ROOT"/}"
    touch "$WORK/$name.failed"
  fi
}

# At most two compiles at a time.
running=0
for f in "${FILES[@]}"; do
  compile "$f" &
  running=$((running + 1))
  if ((running >= 2)); then
    wait -n
    running=$((running - 1))
  fi
done
wait

status=0
for f in "${FILES[@]}"; do
  name="$(basename "$f" .cu)"
  if [[ -s "$WORK/$name.log" ]]; then
    echo "---- nvcc output for ${f#"$ROOT"/} ----"
    cat "$WORK/$name.log"
  fi
  [[ -e "$WORK/$name.failed" ]] && status=1
done
if ((status == 0)); then
  echo "check_nvcc: all ${#FILES[@]} file(s) compiled"
else
  echo "check_nvcc: some files failed" >&2
fi
exit "$status"
