#!/usr/bin/env bash
# Installs what building and testing need on a fresh Debian machine, then
# fetches the default model. Idempotent: skips what is already there.
#   - apt: cmake, clang, libclang-dev (llama.cpp's build and its bindings)
#   - pip: numpy (the tests load the .npz files in Python, as users do) and
#     gguf (llama.cpp's GGUF reader, for the independent numpy forward pass)
#   - the default model, SmolLM2-135M-Instruct Q4_1, into models/
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v clang >/dev/null || missing+=(clang)
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || missing+=(libclang-dev)
if ((${#missing[@]})); then
    echo "installing ${missing[*]} with apt-get"
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python3 -c "import numpy, gguf" 2>/dev/null || python3 -m pip install --quiet numpy "gguf==0.19.0"

bash scripts/fetch-model.sh
