#!/usr/bin/env bash
# The GPU throughput table of docs/scaling.md: training and sampling rates and peak memory of the
# tiny/small/base networks at L = 32/64/128, fp32 against bf16 autocast, TF32 and torch.compile.
#
#   bash benchmarks/gpu_check.sh [OUTDIR]        # OUTDIR defaults to $OUT, else runs/gpu_check
#
# Needs a CUDA device and a Python with torch, numpy, scipy and tqdm (no zarr, no numba: only the
# network, the process and the optimiser run). Each part has its own time limit, so one slow or
# failing part (a compilation, say) costs only its own rows; about 8 minutes in all on one H200.
set -u
out=${1:-${OUT:-runs/gpu_check}}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    $py -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
} > "$out/device.txt" 2>&1

# every network and size, eager: fp32, bf16 autocast, TF32 matmuls
timeout 300 $py benchmarks/bench_skild.py --device cuda --nets tiny,small,base --sizes 32,64,128 \
    --modes fp32,bf16,tf32 --batch 64 --sample-batch 256 --seconds 1 --max-step-seconds 60 \
    2>&1 | tee "$out/throughput.txt"
# torch.compile on the small network (its first steps pay for the compilation, untimed)
timeout 180 $py benchmarks/bench_skild.py --device cuda --nets small --sizes 32,64,128 \
    --modes fp32+compile,bf16+compile --batch 64 --sample-batch 256 --seconds 1 --max-step-seconds 120 \
    2>&1 | tee "$out/throughput_compiled.txt"
echo "wrote $out/device.txt, $out/throughput.txt, $out/throughput_compiled.txt"
