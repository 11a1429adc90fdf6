#!/usr/bin/env bash
# Run NVIDIA compute-sanitizer over the CUDA tests of the fused ops (GPU machines only).
#
#   bash tools/cuda_sanitize.sh                     memcheck and racecheck
#   bash tools/cuda_sanitize.sh --all               also initcheck and synccheck
#   bash tools/cuda_sanitize.sh memcheck initcheck  the tools named
#
# Each tool runs pytest -k cuda over tests/ops and tests/reliability/test_ops_under_stress.py
# (the CUDA backend's parametrisations and the @pytest.mark.cuda tests; slow tests skipped)
# under `compute-sanitizer --tool <tool> --target-processes all`, with its report in
# build/cuda-sanitize/<tool>.log. One summary line per tool; the exit status is non-zero if
# any tool reported an error or a hazard, or if the tests themselves failed.
#
# Environment:
#   COMPUTE_SANITIZER   the compute-sanitizer binary (default: on PATH, else
#                       $CUDA_HOME/bin/compute-sanitizer, else /usr/local/cuda/bin/...)
#   PYTHON              interpreter with torch and acsleuth (default: python)
#   PYTEST_ARGS         extra pytest arguments (e.g. "-x" or a narrower -k)
#
# PyTorch's caching allocator hands out slices of large blocks, so an out-of-bounds access
# can land in memory that is allocated but belongs to another tensor and memcheck would not
# see it: PYTORCH_NO_CUDA_MEMORY_CACHING=1 gives every tensor its own cudaMalloc. Expect the
# run to be 10-100x slower than plain pytest; racecheck is the slowest.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python}"
OUT="$ROOT/build/cuda-sanitize"

tools=(memcheck racecheck)
if [[ $# -gt 0 ]]; then
  if [[ $1 == --all ]]; then
    tools=(memcheck racecheck initcheck synccheck)
  else
    tools=("$@")
  fi
fi
for tool in "${tools[@]}"; do
  case "$tool" in
    memcheck | racecheck | initcheck | synccheck) ;;
    *) echo "cuda_sanitize: unknown tool '$tool' (memcheck, racecheck, initcheck, synccheck)" >&2
       exit 2 ;;
  esac
done

sanitizer="${COMPUTE_SANITIZER:-}"
if [[ -z $sanitizer ]]; then
  sanitizer="$(command -v compute-sanitizer || true)"
fi
for candidate in "${CUDA_HOME:-/nonexistent}/bin/compute-sanitizer" /usr/local/cuda/bin/compute-sanitizer; do
  if [[ -z $sanitizer && -x $candidate ]]; then
    sanitizer="$candidate"
  fi
done
if [[ -z $sanitizer ]]; then
  echo "cuda_sanitize: compute-sanitizer not found (install the CUDA toolkit or set COMPUTE_SANITIZER)" >&2
  exit 2
fi
if ! "$PY" - <<'EOF'
import sys
import torch
from acsleuth import _extension
_extension.load()
ok = torch.cuda.is_available() and _extension.HAS_CUDA_OPS
print("cuda_sanitize: torch", torch.__version__, "| GPU:",
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
      "| CUDA kernels:", _extension.HAS_CUDA_OPS, _extension.LOAD_ERROR or "")
sys.exit(0 if ok else 1)
EOF
then
  echo "cuda_sanitize: needs a CUDA GPU and acsleuth built with its CUDA kernels" >&2
  exit 2
fi

mkdir -p "$OUT"
"$sanitizer" --version | tail -n 1
export PYTORCH_NO_CUDA_MEMORY_CACHING=1
# The sanitizer's own exit code for "found something"; pytest's codes stay below 6.
FOUND=86

status=0
summaries=()
for tool in "${tools[@]}"; do
  log="$OUT/$tool.log"
  extra=()
  case "$tool" in
    memcheck) extra=(--leak-check full) ;;
    racecheck) extra=(--racecheck-report all) ;;
  esac
  echo "== $tool (report: $log)"
  start=$SECONDS
  rc=0
  # shellcheck disable=SC2086  # PYTEST_ARGS is a list of arguments
  "$sanitizer" --tool "$tool" --target-processes all --error-exitcode "$FOUND" \
    --print-limit 100 --log-file "$log" "${extra[@]}" \
    "$PY" -m pytest -q -p no:cacheprovider -k cuda -m "not slow" \
    tests/ops tests/reliability/test_ops_under_stress.py ${PYTEST_ARGS:-} || rc=$?
  took=$((SECONDS - start))
  # Every sanitized process appends its own summary: add them up.
  errors="$(grep -Eo 'ERROR SUMMARY: [0-9]+' "$log" | awk '{s += $3} END {print s + 0}')"
  hazards="$(grep -Eo 'RACECHECK SUMMARY: [0-9]+' "$log" | awk '{s += $3} END {print s + 0}')"
  if [[ $rc == "$FOUND" || $errors != 0 || $hazards != 0 ]]; then
    verdict="FINDINGS"
    status=1
  elif [[ $rc != 0 ]]; then
    verdict="TESTS FAILED (pytest exit $rc)"
    status=1
  elif ! grep -q 'SUMMARY' "$log"; then
    verdict="NO REPORT (did any CUDA kernel run?)"
    status=1
  else
    verdict="clean"
  fi
  summaries+=("$(printf '%-10s %-40s errors=%s hazards=%s time=%ss log=%s' \
    "$tool" "$verdict" "$errors" "$hazards" "$took" "$log")")
done

echo "== compute-sanitizer summary"
printf '%s\n' "${summaries[@]}"
exit "$status"
