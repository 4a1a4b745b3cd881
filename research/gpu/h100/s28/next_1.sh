#!/usr/bin/env bash
# Next GPU session, call 1: grouped_sdpa against compile=on's steps in one process each; then the 1B scoring cases.
source research/gpu/h100/run-common.sh n1
S="python3 -m research.studies.decode_study --model random:llama-3.2-1b --device cuda"
{
timeout 150 $S --batch 32 --batched-step-attention eager --batched-step-attention grouped_sdpa --turns 2
timeout 130 $S --single-step-attention sdpa --single-step-attention grouped_sdpa --turns 2
} 2>&1 | grep -v Warning | tee $OUT/grouped-same-process.log
gate 1b-scoring $((585 - SECONDS)) --bench-model random:llama-3.2-1b --bench-min-time 0 --bench-rounds 2 -k test_scoring \
  --bench-save-baseline --bench-reason "H100: the 1B profile's scoring cases"
echo "total $SECONDS s"
