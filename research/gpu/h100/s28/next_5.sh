#!/usr/bin/env bash
# Call 5: the embedded model's decode cases again, batched compiled steps now on grouped_sdpa.
source research/gpu/h100/run-common.sh n5
gate embedded-decode 280 --bench-min-time 1 -k test_decode \
  --bench-save-baseline --bench-reason "H100: batched compiled steps on grouped_sdpa"
echo "total $SECONDS s"
