#!/usr/bin/env bash
# The embedded model's gate, second half (scoring, search), saved; then the grouped_sdpa batched study if time is left.
source research/gpu/h100/run-common.sh 2
gate embedded-b 420 --bench-min-time 1 -k "test_scoring or test_search" --bench-save-baseline \
  --bench-reason "H100: the embedded model's scoring and search cases"
S="python3 -m research.studies.decode_study --model random:llama-3.2-1b --device cuda"
left=$((585 - SECONDS)); [ $left -gt 100 ] && timeout $left $S --batch 32 --batched-step-attention grouped_sdpa 2>&1 | grep -v Warning | tee $OUT/grouped-32.log
echo "total $SECONDS s"
