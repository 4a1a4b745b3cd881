#!/usr/bin/env bash
# The 1B profile's scoring, search, detection and eval cases, saved beside its decode cases.
source research/gpu/h100/run-common.sh 3
gate 1b-rest 570 --bench-model random:llama-3.2-1b --bench-min-time 0 --bench-rounds 2 -k "not test_decode" --bench-save-baseline \
  --bench-reason "H100: the 1B profile's scoring, search, detection and eval cases"
echo "total $SECONDS s"
