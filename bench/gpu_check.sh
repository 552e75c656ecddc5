#!/usr/bin/env bash
# Issue 6's GPU figures in one device call (~6-8 min on one H100/H200): training throughput and MFU
# of GPT-2 124M / 350M / 774M shapes against nanoGPT's model on the same card, bf16 autocast +
# torch.compile, T=1024, then the trainer's own CUDA path (bf16 and fp16 + GradScaler, compile,
# a checkpoint and its resume) on the tiny recipe.
#
# nanoGPT is not ours and is never committed: before the call, copy its model.py into an ignored
# folder of the checkout and carry it, e.g.
#   mkdir -p .nanogpt && cp ../nanoGPT/model.py .nanogpt/ && echo /.nanogpt/ >> .git/info/exclude
#   run(command="bash bench/gpu_check.sh", carry=[".nanogpt"], timeout_s=540)
# Output goes to stdout and $OUT (the device tool's folder; /tmp/gpu_check elsewhere).
#
# SMOKE=1 runs the same steps with tiny shapes on the CPU, to check this script without a GPU:
#   SMOKE=1 NANOGPT=../nanoGPT PY=.venv/bin/python bash bench/gpu_check.sh
set -euo pipefail
PY=${PY:-python3}
NANOGPT=${NANOGPT:-.nanogpt}
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

if [ "${SMOKE:-0}" = 1 ]; then
  shapes=("2 64 2 64 4 512")  # n_layer n_embd n_head block batch vocab
  bench=(--dtype fp32 --device cpu --steps 1 --warmup 1 --repeats 2 --threads 2)
  train=(train.device=cpu train.max_steps=4 model.block_size=64)
  precisions=(fp32)
else
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  "$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
  # GPT-2 124M, 350M (medium), 774M (large); the batch sizes of the issue's nanoGPT figures
  shapes=("12 768 12 1024 16 50304" "24 1024 16 1024 16 50304" "36 1280 20 1024 8 50304")
  bench=(--dtype bf16 --compile --steps 10 --warmup 3 --repeats 3)
  train=(train.device=cuda train.max_steps=60 train.compile=true data.curate=false)  # no curate extras there
  precisions=(bf16 fp16)
fi

for s in "${shapes[@]}"; do
  read -r L E H T B V <<<"$s"
  echo "== train_throughput: ${L}x${E}, T=$T, B=$B vs nanoGPT"
  "$PY" bench/train_throughput.py --n-layer "$L" --n-embd "$E" --n-head "$H" --block-size "$T" \
    --batch-size "$B" --vocab-size "$V" "${bench[@]}" --nanogpt "$NANOGPT" 2>&1 | tee -a "$OUT/throughput.log"
done

for p in "${precisions[@]}"; do
  run="$OUT/runs"
  rm -rf "$run/tiny-$p"
  echo "== lmforge train (tiny recipe), precision $p, then resume to +20 steps"
  "$PY" -m lmforge train --config tiny name="tiny-$p" out_dir="$run" train.precision="$p" "${train[@]}" \
    train.log_every=20 2>&1 | tail -n 8 | tee -a "$OUT/train.log"
  steps=$(grep -o 'max_steps=[0-9]*' <<<"${train[*]}" | cut -d= -f2)
  "$PY" -m lmforge train --config tiny name="tiny-$p" out_dir="$run" train.precision="$p" "${train[@]}" \
    train.max_steps=$((steps + 20)) train.log_every=20 2>&1 | tail -n 4 | tee -a "$OUT/train.log"
done
echo "== done: $OUT"
