#!/usr/bin/env bash
# The embedded model's gate, first half (decode, detection, eval), saved; then the grouped_sdpa decode study if time is left.
source research/gpu/h100/run-common.sh 1
gate embedded-a 470 --bench-min-time 1 -k "test_decode or test_detection or test_eval" --bench-save-baseline \
  --bench-reason "H100: the embedded model's decode, detection and eval cases"
S="python3 -m research.studies.decode_study --model random:llama-3.2-1b --device cuda"
left=$((585 - SECONDS)); [ $left -gt 100 ] && timeout $left $S --single-step-attention grouped_sdpa 2>&1 | grep -v Warning | tee $OUT/grouped-1.log
echo "total $SECONDS s"
