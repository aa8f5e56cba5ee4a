#!/usr/bin/env bash
# Run the equivalence tests under settings that change floating-point rounding but not meaning, so that the
# differences another CPU would show are found here first. Each line below is one run; all must pass.
#
#   OMP_NUM_THREADS            1 or 2 threads split sums differently.
#   MKL_ENABLE_INSTRUCTIONS    the BLAS kernels MKL picks. On AMD CPUs MKL takes its generic path; SSE4_2
#                              reproduces that here (it is how `make test` once failed on an AMD EPYC).
#   ATEN_CPU_CAPABILITY        PyTorch's own vector kernels: default (none), avx2 or avx512.
#   ONEDNN_MAX_CPU_ISA         the instruction set oneDNN's convolutions may use.
#   MRCNN_TEST_MKLDNN=0        oneDNN switched off: PyTorch's own convolutions (tests/conftest.py).
# channels_last inputs and float64 references are parameters of the tests themselves.
#
# Usage: bash tests/perturbations.sh [PYTHON]   (from the repository root; `make test-perturbed` does this)
set -uo pipefail
PY=${1:-.venv/bin/python}
TESTS="tests/test_boxes.py tests/test_nms.py tests/test_roi_align.py tests/test_roi_pool.py tests/test_rpn.py
       tests/test_roi_heads.py tests/test_backbone.py tests/test_model.py tests/test_model_inputs.py"
SETTINGS=(
  "OMP_NUM_THREADS=1"
  "OMP_NUM_THREADS=2"
  "MKL_ENABLE_INSTRUCTIONS=SSE4_2"
  "MKL_ENABLE_INSTRUCTIONS=AVX2"
  "ATEN_CPU_CAPABILITY=default"
  "ATEN_CPU_CAPABILITY=avx2"
  "ONEDNN_MAX_CPU_ISA=AVX2"
  "MRCNN_TEST_MKLDNN=0"
  "ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2 ONEDNN_MAX_CPU_ISA=SSE41 OMP_NUM_THREADS=1"
)
failed=0
for setting in "${SETTINGS[@]}"; do
  start=$SECONDS
  # shellcheck disable=SC2086
  if result=$(env $setting "$PY" -m pytest -q -p no:cacheprovider $TESTS 2>&1); then status=passed; else status=FAILED; failed=1; fi
  printf '%-7s %4ss  %s\n' "$status" $((SECONDS - start)) "$setting"
  [ "$status" = FAILED ] && echo "$result" | grep -E "^(FAILED|E )" | head -20
done
exit $failed
