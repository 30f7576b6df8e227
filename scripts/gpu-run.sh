#!/usr/bin/env bash
# The study's scale on a GPU, in one run: on a machine with an NVIDIA GPU,
# its driver, CUDA 13's libraries, python3 and numpy, and neither Rust nor
# internet (the project's H200 box), this writes a Vicuna-13B-shaped and a
# Llama-2-70B-shaped random-weight model there and measures, with every
# layer offloaded:
#   1. the sample prompt captured on the GPU against the CPU capture of the
#      same model (same top token, hidden-state cosine per layer, largest
#      attention difference), for both shapes;
#   2. `engine bench`: bare forward, reduced and full capture;
#   3. the `paper` preset with one draw of demonstrations on the 70B shape
#      (`engine bench --pipeline --experiment scripts/bench/paper-one-draw.toml`;
#      the preset's three draws triple the k-shot capture and the patching,
#      which the 8-minute budget does not hold): prompts/s, the ratio of the
#      whole run to llama.cpp's bare forward on the same prompts, and the
#      GPU's peak memory.
# Every figure is printed and every log kept under $OUT (default
# ./gpu-run-out). Budget: under 8 minutes on an H200.
#
# Here (the build machine), first:
#   bash scripts/build-cuda.sh            # the CUDA binary, target/cuda/release/engine
#   bash scripts/gpu-run.sh --prepare     # packs target/gpu-run/ (binary xz-compressed,
#                                         # the tokenizer; under 64 MiB)
# then carry target/gpu-run with the checkout and run `bash scripts/gpu-run.sh` there.
#
# The CPU half can be tried anywhere, on one-block slices of the shapes and a
# small experiment instead of the paper preset:
#   bash scripts/gpu-run.sh --cpu-only --blocks 1 --engine target/release/engine \
#     --experiment tests/fixtures/small-experiment.toml
set -euo pipefail
cd "$(dirname "$0")/.."

pack=target/gpu-run
mode=gpu
blocks=""
engine=""
experiment=scripts/bench/paper-one-draw.toml
work="${GPU_RUN_WORK:-/tmp/gpu-run}"
while [ $# -gt 0 ]; do
  case "$1" in
    --prepare) mode=prepare ;;
    --cpu-only) mode=cpu ;;
    --blocks) blocks="$2"; shift ;;
    --engine) engine="$2"; shift ;;
    --work) work="$2"; shift ;;
    --experiment) experiment="$2"; shift ;;
    -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
    *) echo "error: unknown option \`$1\` (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ "$mode" = prepare ]; then
  binary=target/cuda/release/engine
  if [ ! -x "$binary" ]; then
    echo "error: \`$binary\` is missing: build it first with \`bash scripts/build-cuda.sh\`" >&2
    exit 2
  fi
  model=models/SmolLM2-135M-Instruct.Q4_1.gguf
  [ -f "$model" ] || bash scripts/fetch-model.sh
  mkdir -p "$pack"
  xz -T0 -9e -c "$binary" > "$pack/engine.xz.partial" && mv "$pack/engine.xz.partial" "$pack/engine.xz"
  python3 scripts/paper_shaped_gguf.py --tokenizer-only --tokenizer "$model" -o "$pack/tokenizer.gguf"
  ls -l "$pack"
  du -sh "$pack"
  exit 0
fi

out="${OUT:-$PWD/gpu-run-out}"
mkdir -p "$out" "$work"
log() { echo "$*" | tee -a "$out/summary.txt"; }
# `timed FILE command…`: runs the command and writes its wall time and peak
# memory to FILE (Python's resource module: GNU time may not be installed).
timed() {
  local file="$1"; shift
  python3 -c '
import resource, subprocess, sys, time
start = time.time()
code = subprocess.call(sys.argv[2:])
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
open(sys.argv[1], "w").write(f"{time.time() - start:.1f} s, {rss / 1e6:.2f} GB peak RSS")
sys.exit(code)' "$file" "$@"
}
: > "$out/summary.txt"
started=$(date +%s)
elapsed() { echo "$(( $(date +%s) - started )) s"; }

# --- the engine -------------------------------------------------------------
if [ -z "$engine" ]; then
  if [ ! -f "$pack/engine.xz" ]; then
    echo "error: \`$pack/engine.xz\` is missing: run \`bash scripts/gpu-run.sh --prepare\` on the build machine and carry $pack" >&2
    exit 2
  fi
  engine="$work/engine"
  # Python's lzma: no xz binary needed on the GPU machine.
  python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
    "$pack/engine.xz" "$engine"
  chmod +x "$engine"
fi
# CUDA's libraries where a normal install puts them, if the loader does not
# already find them.
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  [ -d "$d" ] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
if ldd "$engine" | grep -q "not found"; then
  ldd "$engine" | grep "not found" | tee -a "$out/summary.txt"
  echo "error: the engine's shared libraries are missing (above): install CUDA 13's runtime and cuBLAS, or add their folder to LD_LIBRARY_PATH" >&2
  exit 2
fi
"$engine" --version | tee -a "$out/summary.txt"

if [ "$mode" = gpu ]; then
  ngl=-1
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/gpu      /' | tee -a "$out/summary.txt"
else
  ngl=0
  log "gpu      none (--cpu-only: every 'GPU' figure below is the CPU again)"
fi
log "cores    $(nproc), memory $(awk '/MemTotal/ {printf "%.0f GB", $2/1e6}' /proc/meminfo), glibc $(ldd --version | head -1 | awk '{print $NF}')"

# --- 0. the models, written here --------------------------------------------
tokenizer="$pack/tokenizer.gguf"
[ -f "$tokenizer" ] || tokenizer=models/SmolLM2-135M-Instruct.Q4_1.gguf
declare -A model
for shape in vicuna-13b llama2-70b; do
  file="$work/$shape${blocks:+-$blocks}.gguf"
  t0=$(date +%s)
  python3 scripts/paper_shaped_gguf.py "$shape" ${blocks:+--blocks "$blocks"} \
    --tokenizer "$tokenizer" -o "$file" | tee -a "$out/summary.txt"
  log "         written in $(( $(date +%s) - t0 )) s"
  model[$shape]="$file"
done

# --- 1. GPU capture against CPU capture -------------------------------------
prompt="Hannah is reading a book in the garden. Max is cooking dinner for his family. Question: What is Hannah doing? Answer:"
for shape in vicuna-13b llama2-70b; do
  for where in gpu cpu; do
    layers=$ngl; [ "$where" = cpu ] && layers=0
    # Flash attention off on both sides: llama.cpp's own softmax is read, so
    # the comparison is of the two backends, not of two attention paths.
    timed "$out/capture-$shape-$where.time" \
      "$engine" capture --model "${model[$shape]}" --n-gpu-layers "$layers" --flash-attn off \
      --prompt "$prompt" --attention --out "$work/$shape-$where.npz" \
      > "$out/capture-$shape-$where.log" 2>&1
  done
  python3 - "$work/$shape-gpu.npz" "$work/$shape-cpu.npz" "$shape" <<'EOF' | tee -a "$out/summary.txt"
import sys
import numpy as np
g, c, shape = np.load(sys.argv[1]), np.load(sys.argv[2]), sys.argv[3]
same_top = int(np.argmax(g["logits_last"])) == int(np.argmax(c["logits_last"]))
hg, hc = g["hidden"].astype(np.float64), c["hidden"].astype(np.float64)
cos = (hg * hc).sum(-1) / (np.linalg.norm(hg, axis=-1) * np.linalg.norm(hc, axis=-1))
per_layer = cos.min(axis=1)
att = np.abs(g["attention"] - c["attention"]).max()
print(f"capture  {shape}: same top token on GPU and CPU: {same_top}; hidden-state cosine, worst token per layer: "
      f"min {per_layer.min():.6f} (layer {int(per_layer.argmin())}), median {np.median(per_layer):.6f}; "
      f"largest attention difference {att:.2e}")
print("         cosine by layer: " + " ".join(f"{v:.5f}" for v in per_layer))
EOF
  log "         capture times: GPU $(cat "$out/capture-$shape-gpu.time"), CPU $(cat "$out/capture-$shape-cpu.time")"
done
log "elapsed  $(elapsed)"

# --- 2. bare forward vs reduced and full capture, every layer offloaded -----
"$engine" bench --model "${model[llama2-70b]}" --n-gpu-layers "$ngl" --tokens 100,500 --repeats 3 \
  2>&1 | tee "$out/bench-70b.log" | tee -a "$out/summary.txt"
log "elapsed  $(elapsed)"

# --- 3. the paper preset on the 70B shape ------------------------------------
peak_file="$out/gpu-memory.csv"
if [ "$mode" = gpu ]; then
  nvidia-smi --query-gpu=timestamp,memory.used --format=csv,noheader,nounits -lms 500 > "$peak_file" &
  sampler=$!
fi
timed "$out/pipeline-70b.time" \
  "$engine" bench --pipeline --model "${model[llama2-70b]}" --n-gpu-layers "$ngl" \
  ${experiment:+--experiment "$experiment"} \
  2>&1 | tee "$out/pipeline-70b.log" | tee -a "$out/summary.txt"
if [ "$mode" = gpu ]; then
  kill "$sampler" 2>/dev/null || true
  log "gpu mem  peak $(awk -F', ' 'max < $2 {max = $2} END {print max}' "$peak_file") MiB during the paper preset"
fi
log "pipeline $(cat "$out/pipeline-70b.time") (wall time and peak host memory of the whole run)"
log "elapsed  $(elapsed) in all; logs in $out"
