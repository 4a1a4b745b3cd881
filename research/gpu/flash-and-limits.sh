#!/usr/bin/env bash
# H100: attention=sdpa_fa (PyTorch's FlashAttention kernel forced through sdpa) and the GPU limits of the issue
# "flash attention that runs". Usage on the device: bash research/gpu/flash-and-limits.sh study|save|profile|tuning|scoring|long
#   study  1. prefill at 512-2,048 tokens, eager / sdpa / sdpa_fa, equal and padded rows (flash_attention_study.py)
#          2. detection on the 1B profile at 512-token contexts: samples/min with batching=dynamic, sdpa against sdpa_fa
#          3. batch-1 decode of the 1B profile, compile off and on: the bench case's own round against the data sheet
#   save   the 1B profile's GPU cases of that issue saved into its H100 baseline with 3 timed rounds: batch-1 decode
#          and scoring at a batch of 32 (compile off and on), then detection at 512-token contexts (each toggle alone:
#          sdpa_fa at batch 1); two runs, so that a cut second run keeps the first's save
#   profile  where a compiled batch-1 decode step's time goes: its kernels by kind (decode_study --profile), and the
#          step with sdpa off cuDNN's kernel and with eager attention
#   scoring  scoring at a batch of 32 saved again (3 timed rounds), once its scores were read back per batch and its
#          teacher forcing's compute share counted the output projection for the kept positions only
#   long   scoring at 512- and 2,048-token contexts, eager against sdpa and sdpa_fa (rows of one length: no padding),
#          saved with 3 timed rounds
#   tuning   the batch-1 step with a wider coordinate-descent search (inductor's radius 2, every direction checked)
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
    gate save-decode-scoring $((330 - SECONDS)) --bench-model random:llama-3.2-1b --bench-matrix ablation --bench-rounds 3 \
      -k "(test_decode and not 32) or test_scoring_batch32" --bench-save-baseline \
      --bench-reason "the step alone and the phases of a round: batch-1 decode, scoring at a batch of 32"
    gate save-detection $((570 - SECONDS)) --bench-model random:llama-3.2-1b --bench-matrix ablation --bench-rounds 3 \
      -k "test_detection_long_context" --bench-save-baseline \
      --bench-reason "flash attention (sdpa_fa): detection at 512-token contexts"
    ;;
  scoring)
    gate save-scoring $((300 - SECONDS)) --bench-model random:llama-3.2-1b --bench-matrix ablation --bench-rounds 3 \
      -k "test_scoring_batch32" --bench-save-baseline \
      --bench-reason "scoring at a batch of 32: scores read back once a batch; the head counted for the kept positions"
    ;;
  long)
    gate save-scoring-long $((280 - SECONDS)) --bench-model random:llama-3.2-1b --bench-matrix ablation --bench-rounds 3 \
      -k "test_scoring_long_context" --bench-save-baseline \
      --bench-reason "flash attention (sdpa_fa) in scoring at 512- and 2,048-token contexts"
    ;;
  tuning)
    timeout -k 10 400 python3 -m research.studies.decode_study --model random:llama-3.2-1b --device cuda --profile \
      --option coordinate_descent_search_radius=2 --option coordinate_descent_check_all_directions=1 \
      > "$OUT/decode-profile-radius2.md" 2>&1
    echo "radius 2 exit $? at $SECONDS s"; grep -A8 "^| kernels" "$OUT/decode-profile-radius2.md"; grep "^| random" "$OUT/decode-profile-radius2.md"
    ;;
  profile)
    for attention in sdpa eager; do
      timeout -k 10 200 python3 -m research.studies.decode_study --model random:llama-3.2-1b --device cuda --bandwidth \
        --profile --single-step-attention $attention > "$OUT/decode-profile-$attention.md" 2>&1
      echo "profile $attention exit $? at $SECONDS s"; grep -A8 "^| kernels" "$OUT/decode-profile-$attention.md"
      grep "^| random" "$OUT/decode-profile-$attention.md"
    done
    timeout -k 10 150 python3 -m research.studies.decode_study --model random:llama-3.2-1b --device cuda --no-cudnn-attention \
      --profile > "$OUT/decode-profile-no-cudnn.md" 2>&1
    echo "no-cudnn exit $? at $SECONDS s"; grep -A8 "^| kernels" "$OUT/decode-profile-no-cudnn.md"; grep "^| random" "$OUT/decode-profile-no-cudnn.md"
    ;;
esac
