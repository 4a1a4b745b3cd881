#!/usr/bin/env bash
# Call 4: the 1B decode cases again, batched compiled steps now on grouped_sdpa.
source research/gpu/h100/run-common.sh n4
gate 1b-decode 400 --bench-model random:llama-3.2-1b --bench-min-time 0 --bench-rounds 2 -k test_decode \
  --bench-save-baseline --bench-reason "H100: batched compiled steps on grouped_sdpa"
echo "total $SECONDS s"
