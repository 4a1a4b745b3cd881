#!/usr/bin/env bash
# Next GPU session, call 3: int8 and nf4 on the embedded model (weight bytes, scoring shift, detection AUC), as on the H200.
source research/gpu/h100/run-common.sh n3
{
timeout 280 python3 -m research.studies.scoring_study --device cuda --n 120 --rounds 1 --topk full 100 --batch 32
timeout $((585 - SECONDS)) python3 -m research.studies.detection_study --device cuda --n 600 --rounds 1
} 2>&1 | grep -v -i warn | tee $OUT/quantized-embedded.log
echo "total $SECONDS s"
