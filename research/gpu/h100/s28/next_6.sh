#!/usr/bin/env bash
# Call 6: the two per-query/speedup studies of the 1B profile on the H100, batched compiled steps on grouped_sdpa.
source research/gpu/h100/run-common.sh n6
{
timeout 150 python3 -m research.studies.scoring_study --model random:llama-3.2-1b --device cuda --n 120 --rounds 3 --topk full 100 --batch 32 --compile --no-quantized
echo "scoring study at $SECONDS s"
timeout $((440 - SECONDS)) python3 -m research.studies.search_study speedup --suite math --n 2 --rollouts 4 --rounds 2 --model random:llama-3.2-1b --device cuda --compile
echo "search study at $SECONDS s"
} 2>&1 | grep -v -i warn | tee $OUT/studies-1b.log
