#!/usr/bin/env bash
# H100 or H200, the quality-verdict session: the embedded model's whole gate saved again under the deterministic-output rules
# (`save`), then run again against what it saved (`aa`): every output must reproduce, and no quality rule may fire.
# Usage on the device: bash research/gpu/quality-gate.sh save|aa
source research/gpu/h100/run-common.sh "$1"
device_class=$(python3 -c 'from harness.models.loading import fingerprint; print(fingerprint("cuda", None)["device_class"])')
file=baselines/$device_class/embedded-reference.json
args=(--benchmark --bench-device cuda -p no:cacheprovider --bench-min-time 0.5 --bench-report "$OUT/$1.json")
if [[ $1 == save ]]; then
  rm -f "$file"  # the cases of the old rules (topk=100, math-200, a 3-pair panel) go; every case is saved anew
  args+=(--bench-save-baseline --bench-reason "the embedded gate under the deterministic-output quality rules")
fi
timeout -k 10 540 python3 -m pytest "${args[@]}" > "$OUT/$1.log" 2>&1
echo "$1 exit $? at $SECONDS s"; tail -60 "$OUT/$1.log" | cut -c1-220
cp "$file" "$OUT/" 2>/dev/null
