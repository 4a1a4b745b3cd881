#!/usr/bin/env bash
# H100: attention=sdpa_fa (PyTorch's FlashAttention kernel forced through sdpa) and the GPU limits of the issue
# "flash attention that runs". Usage on the device: bash research/gpu/flash-and-limits.sh study|save
#   study  1. prefill at 512-2,048 tokens, eager / sdpa / sdpa_fa, equal and padded rows (flash_attention_study.py)
#          2. detection on the 1B profile at 512-token contexts: samples/min with batching=dynamic, sdpa against sdpa_fa
#          3. batch-1 decode of the 1B profile, compile off and on: the bench case's own round against the data sheet
#   save   the 1B profile's GPU cases of that issue saved into its H100 baseline with 3 timed rounds: batch-1 decode,
#          detection at 512-token contexts (each toggle alone: sdpa_fa at batch 1), scoring with compile
source research/gpu/h100/run-common.sh "${1:-study}"
case ${1:-study} in
  study)
    timeout -k 10 150 python3 -m research.studies.flash_attention_study --model random:llama-3.2-1b --device cuda \
      > "$OUT/flash-prefill.md" 2>&1
    echo "prefill exit $? at $SECONDS s"; grep -v "^Loading" "$OUT/flash-prefill.md" | tail -30
    timeout -k 10 200 python3 -m research.studies.detection_study --model random:llama-3.2-1b --device cuda \
      --context-tokens 512 --n 200 --rounds 3 --no-quantized --variants "all on (sdpa, dynamic, topk=50)" \
      "all on (sdpa_fa, dynamic, topk=50)" "sdpa_fa, batch 1, topk=50" "attention=sdpa (recompute)" \
      > "$OUT/detection-512.md" 2>&1
    echo "detection exit $? at $SECONDS s"; grep -v "^Loading" "$OUT/detection-512.md" | tail -25
    gate decode $((560 - SECONDS)) --bench-model random:llama-3.2-1b -k "test_decode and not 32" --bench-rounds 3
    ;;
  save)
    gate save-1b $((560 - SECONDS)) --bench-model random:llama-3.2-1b --bench-matrix ablation --bench-rounds 3 \
      -k "(test_decode and not 32) or test_detection_long_context or test_scoring_compiled" \
      --bench-save-baseline --bench-reason "flash attention (sdpa_fa) and the GPU limits: decode batch 1, detection at 512 tokens, compiled scoring"
    ;;
esac
