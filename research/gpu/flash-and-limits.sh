#!/usr/bin/env bash
# H100: attention=sdpa_fa (PyTorch's FlashAttention kernel forced through sdpa) and the GPU limits of issue "flash
# attention that runs". Usage on the device: bash research/gpu/flash-and-limits.sh
#   1. prefill at 512-2,048 tokens, eager / sdpa / sdpa_fa, equal and padded rows (research/studies/flash_attention_study.py)
#   2. detection on the 1B profile at 512-token contexts: samples/min with batching=dynamic, sdpa against sdpa_fa
#   3. batch-1 decode of the 1B profile, compile off and on: the bench case's own round against the data sheet
source research/gpu/h100/run-common.sh flash
timeout -k 10 150 python3 -m research.studies.flash_attention_study --model random:llama-3.2-1b --device cuda \
  > "$OUT/flash-prefill.md" 2>&1
echo "prefill exit $? at $SECONDS s"; grep -v "^Loading" "$OUT/flash-prefill.md" | tail -30
timeout -k 10 200 python3 -m research.studies.detection_study --model random:llama-3.2-1b --device cuda --context-tokens 512 \
  --n 200 --rounds 3 --no-quantized --variants "all on (sdpa, dynamic, topk=50)" "all on (sdpa_fa, dynamic, topk=50)" \
  "sdpa_fa, batch 1, topk=50" "attention=sdpa (recompute)" > "$OUT/detection-512.md" 2>&1
echo "detection exit $? at $SECONDS s"; grep -v "^Loading" "$OUT/detection-512.md" | tail -25
gate decode $((560 - SECONDS)) --bench-model random:llama-3.2-1b -k "test_decode and not 32" --bench-rounds 3
