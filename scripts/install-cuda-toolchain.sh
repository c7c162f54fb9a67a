#!/usr/bin/env bash
# Installs a CUDA 13.0 compiler (nvcc + headers) from NVIDIA's PyPI wheels into a prefix, so that
# `cargo build --features cuda` works on a machine with no GPU, no driver and no system toolkit.
#
#   scripts/install-cuda-toolchain.sh [PREFIX]      (default: $HOME/.cache/realm/cuda-13.0)
#   eval "$(scripts/install-cuda-toolchain.sh)"     (sets CUDA_HOME, PATH, CUDARC_CUDA_VERSION, ...)
#
# Why 13.0.x exactly: the GPU machines run driver 580 (CUDA 13.0), which refuses PTX produced by a
# newer nvcc. The wheels' own requirements are unpinned, hence `--no-deps`.
#
# The driver (libcuda), cuBLAS/cuRAND and NCCL are not in these wheels. candle's `cuda` feature
# (and our `nccl` feature) links against them, so we generate link-only stub libraries with the right sonames under
# $CUDA_HOME/lib/stubs. They let the linker finish; they are never meant to be loaded (do not put
# that folder on LD_LIBRARY_PATH): at run time the real driver and libraries of the GPU machine are
# used. Users with a real CUDA 12.x/13.x toolkit need none of this.
#
# Idempotent: a second run finds the stamp file and only prints the environment.
set -euo pipefail

PREFIX="${1:-${REALM_CUDA_PREFIX:-$HOME/.cache/realm/cuda-13.0}}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PACKAGES=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
  nvidia-cuda-nvrtc==13.0.88
)
# cuobjdump (to inspect the fatbins) has no 13.0 wheel; any 13.x reads them. Its own --target dir,
# because pip --target --upgrade replaces whole top-level folders.
CUOBJDUMP=nvidia-cuda-cuobjdump==13.2.51
# The stub lists are part of the stamp: a new list (libnccl.so.2 for the `nccl` feature) makes
# the stubs again.
STAMP="$PREFIX/.realm-toolchain-$({ printf '%s\n' "${PACKAGES[@]}" "$CUOBJDUMP"; cat "$HERE"/cuda-stubs/*.txt; } | cksum | cut -d' ' -f1)"
CUDA_HOME_DIR="$PREFIX/nvidia/cu13"

log() { echo "install-cuda-toolchain: $*" >&2; }

if [[ ! -f "$STAMP" ]]; then
  command -v python3 >/dev/null || { log "python3 with pip is required"; exit 1; }
  command -v cc >/dev/null || { log "a C compiler (cc) is required for the stub libraries"; exit 1; }
  log "installing ${PACKAGES[*]} into $PREFIX"
  mkdir -p "$PREFIX"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --upgrade \
    --target "$PREFIX" "${PACKAGES[@]}" >&2
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --upgrade \
    --target "$PREFIX/tools" "$CUOBJDUMP" >&2

  [[ -x "$CUDA_HOME_DIR/bin/nvcc" ]] || { log "nvcc not found at $CUDA_HOME_DIR/bin/nvcc after install"; exit 1; }
  # Toolkits have lib64; the wheels only have lib.
  [[ -e "$CUDA_HOME_DIR/lib64" ]] || ln -s lib "$CUDA_HOME_DIR/lib64"
  # Unversioned names for the linker (-lnvrtc, -lcudart).
  for lib in nvrtc cudart; do
    real="$(ls "$CUDA_HOME_DIR"/lib/lib$lib.so.* 2>/dev/null | head -n1 || true)"
    [[ -n "$real" && ! -e "$CUDA_HOME_DIR/lib/lib$lib.so" ]] && ln -s "$(basename "$real")" "$CUDA_HOME_DIR/lib/lib$lib.so"
  done

  # Link-only stubs: every symbol the cudarc bindings can reference, as an empty function.
  stubs="$CUDA_HOME_DIR/lib/stubs"
  mkdir -p "$stubs"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  for list in "$HERE"/cuda-stubs/*.txt; do
    soname="$(basename "$list" .txt)"          # e.g. libcublas.so.13
    linkname="${soname%.so.*}.so"              # e.g. libcublas.so
    grep -v '^#' "$list" | sed 's/.*/void &(void) {}/' > "$work/$soname.c"
    cc -shared -fPIC -w -Wl,-soname,"$soname" -o "$stubs/$soname" "$work/$soname.c"
    ln -sf "$soname" "$stubs/$linkname"
  done
  touch "$STAMP"
  log "done"
fi

# The environment, for `eval "$(scripts/install-cuda-toolchain.sh)"`.
cat <<EOF
export CUDA_HOME="$CUDA_HOME_DIR"
export CUDA_PATH="$CUDA_HOME_DIR"
export PATH="$CUDA_HOME_DIR/bin:$PREFIX/tools/nvidia/cu13/bin:\$PATH"
export CUDARC_CUDA_VERSION=13000
export CUDA_COMPUTE_CAP="\${CUDA_COMPUTE_CAP:-90}"
EOF
