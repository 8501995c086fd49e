#!/usr/bin/env bash
# GPU check of the trainer: the offline profile's student (smollm2-135m-instruct) at SEQ_LEN 2048 on one
# GPU and, where there are two or more, on two (torchrun), first in bf16 then in 4 bits (QLoRA); prints
# tokens/s and peak memory per rank. Then the efficacy bench with the GPU profile's training settings
# (config.gpu.yaml: 3 rounds, LoRA on all linear layers, 25 held-out tasks and all 164 HumanEval problems):
# held-out and HumanEval pass@1 of base and adapter per round with Wilson intervals and McNemar's paired p.
# Its student is EFFICACY_MODEL: the GPU profile's Qwen/Qwen2.5-Coder-0.5B-Instruct where the Hugging Face
# cache holds it (the check never downloads), else the packaged smollm2-135m-instruct. On a machine
# without an NVIDIA GPU it says so and exits 0.
#
#   bench/gpu_check.sh            (from the repository root, with the project's .venv installed)
#   SKIP_EFFICACY=1 bench/gpu_check.sh     (the trainer figures only: the efficacy bench takes longest)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_check: no NVIDIA GPU on this machine (nvidia-smi missing or finds none): nothing to check"
    exit 0
fi
gpus=$("$PY" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)')
if [ "$gpus" -lt 1 ]; then
    echo "gpu_check: nvidia-smi sees a GPU but this torch build cannot use CUDA: nothing to check"
    exit 0
fi
nprocs=1
[ "$gpus" -ge 2 ] && nprocs=1,2
echo "gpu_check: $gpus GPU(s); $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -1)"

# 4-bit loading needs a model folder (not a GGUF file): dequantize the packaged model once.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" - "$work/student" <<'PYEOF'
import sys
from heidi_engine.agents.student import load_model_and_tokenizer
model, tokenizer = load_model_and_tokenizer("smollm2-135m-instruct", device="cpu", dtype="bfloat16")
model.save_pretrained(sys.argv[1])
tokenizer.save_pretrained(sys.argv[1])
PYEOF

echo "--- bf16 ---"
"$PY" bench/bench_train_ranks.py --model "$work/student" --seq-len 2048 --steps 30 --rounds 1 --nprocs "$nprocs"
echo "--- 4-bit (QLoRA) ---"
if "$PY" -c 'import bitsandbytes' 2>/dev/null; then
    "$PY" bench/bench_train_ranks.py --model "$work/student" --seq-len 2048 --steps 30 --rounds 1 --nprocs "$nprocs" --load-in-4bit
else
    echo "gpu_check: bitsandbytes is not installed (pip install bitsandbytes): 4-bit skipped"
fi

[ "${SKIP_EFFICACY:-0}" = "1" ] && exit 0
echo "--- efficacy (held-out pass@1, base vs adapter, paired) ---"
model="${EFFICACY_MODEL:-}"
if [ -z "$model" ]; then
    model=smollm2-135m-instruct
    if HF_HUB_OFFLINE=1 "$PY" -c 'from huggingface_hub import snapshot_download as s; s("Qwen/Qwen2.5-Coder-0.5B-Instruct", local_files_only=True)' >/dev/null 2>&1; then
        model=Qwen/Qwen2.5-Coder-0.5B-Instruct
    fi
fi
"$PY" bench/bench_efficacy.py --model "$model" --rounds 3 --samples 200 --steps 75 --lr 0.0002 --lora-r 16 \
    --targets all-linear --val-ratio 0.3 --difficulty any --eval-samples 164 --seq-len 1024 --batch-size 8 \
    --eval-batch-size 32
