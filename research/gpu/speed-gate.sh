#!/usr/bin/env bash
# H100, the speed-verdict session. Usage on the device: bash research/gpu/speed-gate.sh study|save-1b-a|save-1b-b
#   study      the embedded model's eval cases saved again (math at 16 items), then 10 gate runs of them with a 25%
#              slowdown rotating over the optimized variants (research/studies/speed_gate_study.py): each variant is timed 5
#              times untouched and 5 times slowed; every run is an A/A run for the references and for quality
#   save-1b-*  the 1B speed profile's default gate saved again with 3 timed rounds a variant, in two parts
source research/gpu/h100/run-common.sh "$1"
device_class=$(python3 -c 'from harness.models.loading import fingerprint; print(fingerprint("cuda", None)["device_class"])')
case $1 in
  study)
    file=baselines/$device_class/embedded-reference.json
    cases=(-k "test_eval and not aime")
    # the eval[math|...] entries measured 32 items; every one of them goes, and the gate's are saved anew
    python3 - "$file" <<'PY'
import json, sys
path = sys.argv[1]; data = json.load(open(path))
data["cases"] = {k: v for k, v in data["cases"].items() if not k.startswith("eval[math|")}
json.dump(data, open(path, "w"), indent=1, sort_keys=True)
PY
    timeout -k 10 150 python3 -m pytest --benchmark --bench-device cuda -p no:cacheprovider "${cases[@]}" --bench-save-baseline \
      --bench-reason "eval math at 16 items (the default gate); speed judged by synchronized wall time" > "$OUT/save.log" 2>&1
    echo "save exit $? at $SECONDS s"; tail -25 "$OUT/save.log" | cut -c1-200
    cp "$file" "$OUT/embedded-reference.json"
    timeout -k 10 $((560 - SECONDS)) python3 research/studies/speed_gate_study.py run --runs 10 --levels 0,0.25 \
      --log "$OUT/speed-gate-h100.jsonl" --baseline "$file" -- --bench-device cuda "${cases[@]}"
    echo "study exit $? at $SECONDS s"
    python3 research/studies/speed_gate_study.py report "$OUT/speed-gate-h100.jsonl" | tail -30
    ;;
  study2)
    # the embedded model's two short headroom cases, 8 runs; then the 1B profile's decode and detection cases saved
    file=baselines/$device_class/embedded-reference.json
    cases=(-k "test_eval_headroom and (gpqa or context_qa)")
    timeout -k 10 300 python3 research/studies/speed_gate_study.py run --runs 8 --levels 0,0.25 \
      --log "$OUT/speed-gate-h100-short.jsonl" --baseline "$file" -- --bench-device cuda "${cases[@]}"
    echo "study exit $? at $SECONDS s"
    python3 research/studies/speed_gate_study.py report "$OUT/speed-gate-h100-short.jsonl" | tail -14
    file=baselines/$device_class/random-llama-3.2-1b.json
    rm -f "$file"
    timeout -k 10 $((565 - SECONDS)) python3 -m pytest --benchmark --bench-device cuda --bench-model random:llama-3.2-1b \
      -p no:cacheprovider -k "decode or detection" --bench-save-baseline --bench-report "$OUT/save-1b-a.md" \
      --bench-reason "the default gate with 3 timed rounds a variant, so that every case judges speed" > "$OUT/save-1b-a.log" 2>&1
    echo "save-1b-a exit $? at $SECONDS s"; tail -25 "$OUT/save-1b-a.log" | cut -c1-200
    cp "$file" "$OUT/random-llama-3.2-1b.json"
    ;;
  save-1b-a|save-1b-b)
    file=baselines/$device_class/random-llama-3.2-1b.json
    [[ $1 == save-1b-a ]] && { rm -f "$file"; sel="eval or decode or detection"; } || sel="scoring or search"
    timeout -k 10 $((570 - SECONDS)) python3 -m pytest --benchmark --bench-device cuda --bench-model random:llama-3.2-1b \
      -p no:cacheprovider -k "$sel" --bench-rounds 3 --bench-save-baseline --bench-report "$OUT/$1.md" \
      --bench-reason "the default gate with 3 timed rounds a variant, so that every case judges speed" > "$OUT/$1.log" 2>&1
    echo "$1 exit $? at $SECONDS s"; tail -40 "$OUT/$1.log" | cut -c1-200
    cp "$file" "$OUT/random-llama-3.2-1b.json"
    ;;
esac
