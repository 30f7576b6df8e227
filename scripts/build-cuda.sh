#!/usr/bin/env bash
# Builds the engine with llama.cpp's CUDA backend (`--features cuda`) on a
# machine with no CUDA install and no GPU: NVIDIA's compiler and libraries come
# from their PyPI packages, installed under target/ (never system-wide). The
# binary is target/cuda/release/engine, in its own target directory so that it
# never replaces the CPU build. Not part of CI: llama.cpp's 144 CUDA files take
# about 75 CPU-minutes (1 h 25 min on two busy cores; the README's GPU section
# has the measured time and sizes); a second run relinks only what changed.
#
# With a normal CUDA toolkit (nvcc on PATH or in /usr/local/cuda) this script
# is not needed:
#     CMAKE_CUDA_ARCHITECTURES=90 cargo build --release --features cuda
#
# Usage: scripts/build-cuda.sh [--arch LIST] [--target-dir DIR] [--toolkit-dir DIR] [--vmm]
#   --arch LIST        GPU architectures, CMake's CMAKE_CUDA_ARCHITECTURES (env
#                      CUDA_ARCH): 90 (H100/H200, the default), 80 (A100),
#                      89 (L4/L40), 120a (RTX 50), or several: "80;90".
#                      CUDA 13 compiles for 75 (Turing) and newer only.
#   --target-dir DIR   cargo's target directory (default: target/cuda).
#   --toolkit-dir DIR  where the PyPI packages go (default: target/cuda-toolkit).
#   --vmm              link the CUDA driver (libcuda.so.1) for llama.cpp's
#                      virtual-memory pool; the binary then cannot start on a
#                      machine without the NVIDIA driver (see "How it links").
# Idempotent: the packages are installed once, llama.cpp is compiled once.
#
# How it links, decided for the GPU machine it is carried to (CUDA 13: driver,
# runtime libraries and nvcc; no Rust, no internet):
#   - the CUDA runtime (cudart) statically, from nvidia-cuda-runtime's
#     libcudart_static.a, as llama-cpp-sys-2 does: nothing to find at run time.
#   - cuBLAS dynamically: libcublas.so.13 (which loads libcublasLt.so.13 beside
#     it) comes from the GPU machine's CUDA 13, not from this build. PyPI has no
#     static cuBLAS, and the shared libraries are 54 MB and 540 MB: too big to
#     carry. The binary's RUNPATH looks beside itself ($ORIGIN), then in
#     /usr/local/cuda/lib64 and /usr/local/cuda-13/lib64; elsewhere, point
#     LD_LIBRARY_PATH at the folder that holds libcublas.so.13.
#     llama-cpp-sys-2's build script asks for cublas_static, cublasLt_static and
#     culibos: empty archives stand in for them, and `-lcublas` is added to the
#     final link.
#   - the driver (libcuda.so.1) not at all: GGML_CUDA_NO_VMM=ON, so only cudart
#     calls the driver, and it loads libcuda.so.1 when the program first asks
#     for a GPU. The binary starts without a driver, and `--n-gpu-layers` then
#     fails with a clear sentence. (The linker still sees `-lcuda` from the
#     build script: a stub libcuda.so whose every function returns
#     CUDA_ERROR_STUB_LIBRARY satisfies it, as the toolkit's stubs/ one does,
#     and --as-needed keeps it out of the binary.) --vmm links the driver.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

# CUDA 13.0, the GPU machine's version (driver 580): every package from the
# same release, so the headers, nvcc and the runtime agree. The runtime's
# soname (libcublas.so.13) is the same for every 13.x.
CUDA_PACKAGES=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.88
  nvidia-cublas==13.0.2.14
  nvidia-cuda-cccl==13.0.85
)

arch=${CUDA_ARCH:-90}
target_dir=${CARGO_TARGET_DIR:-$repo/target}/cuda
toolkit_dir=${CARGO_TARGET_DIR:-$repo/target}/cuda-toolkit
vmm=OFF
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch=${2:?--arch needs a value, e.g. 90}; shift 2 ;;
    --arch=*) arch=${1#--arch=}; shift ;;
    --target-dir) target_dir=${2:?--target-dir needs a folder}; shift 2 ;;
    --target-dir=*) target_dir=${1#--target-dir=}; shift ;;
    --toolkit-dir) toolkit_dir=${2:?--toolkit-dir needs a folder}; shift 2 ;;
    --toolkit-dir=*) toolkit_dir=${1#--toolkit-dir=}; shift ;;
    --vmm) vmm=ON; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown option \`$1\` (see --help)" >&2; exit 2 ;;
  esac
done
if ! [[ $arch =~ ^[0-9]+[af]?(-real|-virtual)?(\;[0-9]+[af]?(-real|-virtual)?)*$ ]]; then
  echo "error: --arch \`$arch\` is not a list of CUDA architectures such as 90 or \"80;90\"" >&2
  exit 2
fi
mkdir -p "$target_dir" "$toolkit_dir"
target_dir=$(cd "$target_dir" && pwd)
toolkit_dir=$(cd "$toolkit_dir" && pwd)

for tool in cmake g++ python3 ar; do
  if ! command -v "$tool" >/dev/null; then
    echo "error: \`$tool\` is missing (apt-get install cmake clang libclang-dev g++ python3-pip)" >&2
    exit 2
  fi
done

# 1. The packages, once (a stamp names the versions installed).
stamp=$toolkit_dir/.installed
if [ "$(cat "$stamp" 2>/dev/null)" != "${CUDA_PACKAGES[*]}" ]; then
  echo "installing ${CUDA_PACKAGES[*]} into $toolkit_dir" >&2
  rm -rf "$toolkit_dir/nvidia" "$stamp"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --no-compile \
    --only-binary=:all: --target "$toolkit_dir" "${CUDA_PACKAGES[@]}"
  echo "${CUDA_PACKAGES[*]}" >"$stamp"
fi

# 2. A toolkit-shaped folder: the packages unpack to nvidia/cu13/{bin,include,
# lib,nvvm}, which nvcc already treats as its install. CMake's FindCUDAToolkit
# and the build script also want lib64/, unversioned .so names to link with,
# the static names the build script asks for, and stubs/libcuda.so.
cuda=$toolkit_dir/nvidia/cu13
lib=$cuda/lib
[ -x "$cuda/bin/nvcc" ] || { echo "error: no nvcc in $cuda/bin" >&2; exit 1; }
ln -sfn lib "$cuda/lib64"
for versioned in "$lib"/lib*.so.*; do
  name=$(basename "$versioned")
  ln -sfn "$name" "$lib/${name%%.so.*}.so"
done
for name in cublas_static cublasLt_static culibos; do
  [ -s "$lib/lib$name.a" ] || printf '!<arch>\n' >"$lib/lib$name.a"
done
mkdir -p "$lib/stubs"
if [ ! -s "$lib/stubs/libcuda.so" ]; then
  # Every driver function cuda.h declares (under its versioned names, as the
  # preprocessor leaves them), each returning CUDA_ERROR_STUB_LIBRARY (34).
  gcc -E -P -I"$cuda/include" -x c - <<<'#include <cuda.h>' |
    grep -oE '\bCUresult +cu[A-Za-z0-9_]+ *\(' | sed -E 's/^CUresult +//; s/ *\($//' | sort -u |
    sed 's/.*/int &(void) { return 34; }/' >"$lib/stubs/libcuda-stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$lib/stubs/libcuda.so" "$lib/stubs/libcuda-stub.c"
fi

# 3. The build. llama-cpp-sys-2's build script hands every CMAKE_* and GGML_*
# variable to llama.cpp's CMake; CUDA_LIBRARY_PATH is where it looks for the
# libraries to link (lib64 and lib64/stubs under it).
export CUDA_PATH=$cuda CUDAToolkit_ROOT=$cuda CUDA_LIBRARY_PATH=$cuda
export CUDACXX=$cuda/bin/nvcc CMAKE_CUDA_COMPILER=$cuda/bin/nvcc
export CMAKE_CUDA_ARCHITECTURES=$arch GGML_CUDA_NO_VMM=$([ "$vmm" = ON ] && echo OFF || echo ON)
export PATH=$cuda/bin:$PATH
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
echo "building for CUDA architectures $arch into $target_dir (VMM $vmm)" >&2
# `cargo rustc` gives the extra link arguments to the engine binary alone
# (-C link-arg goes last on the line, after the static llama.cpp libraries
# that need cuBLAS).
# shellcheck disable=SC2016 # $ORIGIN is for the dynamic loader, not the shell.
cargo rustc --release --locked -p engine --bin engine --features cuda \
  --target-dir "$target_dir" -- \
  -C link-arg=-L"$lib" -C link-arg=-lcublas \
  -C 'link-arg=-Wl,-rpath,$ORIGIN:/usr/local/cuda/lib64:/usr/local/cuda-13/lib64'

# 4. What travels: the binary, compressed, and what it needs on the GPU machine.
bin=$target_dir/release/engine
if [ ! -s "$bin.zst" ] || [ "$bin" -nt "$bin.zst" ]; then
  zstd -19 -T0 -q -f "$bin" -o "$bin.zst"
fi
glibc=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sort -V | tail -1)
needed=$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | paste -sd ' ')
mib() { awk -v b="$(stat -c %s "$1")" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo "built $bin: $(mib "$bin") ($(mib "$bin.zst") as $bin.zst); needs $glibc and $needed" >&2
