#!/usr/bin/env bash
# Next GPU session, call 2: the 1B search and eval-at-scale cases.
source research/gpu/h100/run-common.sh n2
gate 1b-search 570 --bench-model random:llama-3.2-1b --bench-min-time 0 --bench-rounds 2 -k "test_search or at_scale" \
  --bench-save-baseline --bench-reason "H100: the 1B profile's search and eval-at-scale cases"
echo "total $SECONDS s"
