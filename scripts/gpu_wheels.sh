#!/usr/bin/env bash
# Download the wheels benchmarks/gpu_check.py needs on the GPU machine, which has torch (CUDA),
# numpy, pandas, scikit-learn, pluggy and pyarrow but no network (and no mlflow: the check runs
# mlflow_xai.pipeline.run, which never touches MLflow). The list is gpu_check.CARRIED:
#   tqdm                      mlflow_xai.progress.progress_bar imports it on every run
#   captum                    deeplift (captum.attr.DeepLift)
#   matplotlib + contourpy, cycler, fonttools, kiwisolver, pillow, pyparsing, packaging
#                             captum.attr imports matplotlib.pyplot when it is imported
#   shap + slicer             tree_interactions only, and only where the machine has numba,
#                             llvmlite and cloudpickle (not carried: llvmlite alone is ~40 MB)
# Each is pinned to the version installed here, fetched with --no-deps; pure-Python wheels once,
# compiled ones (matplotlib, contourpy, kiwisolver, pillow, shap) for each Python version in
# GPU_WHEELS_PYTHON (default: 3.12, the GPU machine's, and this machine's own so that the
# --wheels path can be tried here), manylinux x86_64. On the GPU machine gpu_check.py --wheels
# installs only the packages that machine lacks, with pip --no-index into a temporary folder.
#
#   bash scripts/gpu_wheels.sh            # -> .gpu_wheels/ (ignored by git), prints its size
#   then the device tool `run`: carry [".gpu_wheels"], command
#   PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --wheels .gpu_wheels
set -euo pipefail
cd "$(dirname "$0")/.."

DEST=${GPU_WHEELS_DIR:-.gpu_wheels}
PY=${PYTHON:-python3}
LOCAL_PY=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
PYTHONS=${GPU_WHEELS_PYTHON:-"3.12 $LOCAL_PY"}
LIMIT_MIB=${GPU_WHEELS_LIMIT_MIB:-50}
PURE="tqdm captum cycler fonttools pyparsing packaging slicer"
COMPILED="matplotlib contourpy kiwisolver pillow shap"

version_of() {
  "$PY" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$1" 2>/dev/null || {
    echo "gpu_wheels: $1 is not installed here; install the project first (pip install -e .)" >&2
    exit 1
  }
}

rm -rf "$DEST"
mkdir -p "$DEST"
PIP=("$PY" -m pip download --quiet --no-deps --only-binary=:all: --disable-pip-version-check
     --dest "$DEST")

for name in $PURE; do
  spec="$name==$(version_of "$name")"
  # Pure-Python wheels (py3-none-any): one file serves every Python 3 version. fonttools also
  # ships compiled wheels; its pure one works everywhere (the compiled parts are optional).
  "${PIP[@]}" --python-version "${PYTHONS%% *}" --implementation py --abi none --platform any "$spec"
done

for name in $COMPILED; do
  spec="$name==$(version_of "$name")"
  for pyver in $PYTHONS; do
    "${PIP[@]}" --python-version "$pyver" --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform manylinux1_x86_64 "$spec"
  done
done

ls -l "$DEST" | awk 'NR > 1 {printf "  %8.1f KiB  %s\n", $5 / 1024, $9}'
bytes=$(du -sb "$DEST" | cut -f1)
mib=$(awk -v b="$bytes" 'BEGIN {printf "%.1f", b / 1048576}')
echo "gpu_wheels: $(ls "$DEST" | wc -l) wheels, $mib MiB in $DEST (Python: $PYTHONS)"
if awk -v b="$bytes" -v l="$LIMIT_MIB" 'BEGIN {exit !(b > l * 1048576)}'; then
  echo "gpu_wheels: over the ${LIMIT_MIB} MiB limit (the run tool carries 64 MiB in all);" \
       "set GPU_WHEELS_PYTHON=3.12 to fetch the GPU machine's version only" >&2
  exit 1
fi
echo "next: the device tool run with carry [\"$DEST\"] and command"
echo "  PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --wheels $DEST"
