# Sourced by each device script: bitsandbytes from the carried wheel, the plugin installed, the machine recorded.
# The carried tree must stay under 64 MiB: .whl/ holds bitsandbytes 0.50.2's wheel with only its CPU and CUDA 13.0
# libraries (3.5 MB; the full wheel's other CUDA and ROCm builds are 39 MB more), RECORD edited to match.
set -u
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-deps --no-build-isolation -e . > /dev/null 2>&1 || { echo "editable install failed: plugin by PYTEST_PLUGINS"; export PYTEST_PLUGINS=harness.plugin; }
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; python3 -c 'import torch, transformers, bitsandbytes; print(torch.__version__, transformers.__version__, bitsandbytes.__version__, torch.version.cuda)'; lscpu | grep 'Model name'; git rev-parse HEAD; } > $OUT/env-$1.txt 2>&1
cat $OUT/env-$1.txt
# gate NAME SECONDS PYTEST-ARGS...: one bench run, its output streamed to $OUT (a cut run keeps what it printed).
gate() {
  local name=$1 limit=$2; shift 2
  timeout -k 10 $limit python3 -m pytest --benchmark --bench-device cuda -p no:cacheprovider -s \
    --bench-report $OUT/$name.md --bench-report $OUT/$name.json "$@" > $OUT/$name.log 2>&1
  echo "$name exit $? at $SECONDS s"; tail -45 $OUT/$name.log
  dmesg 2>/dev/null | tail -20 > $OUT/$name-dmesg.txt
  for f in baselines/cuda-h100*/*.json; do cp $f $OUT/$(basename $(dirname $f))-$name-$(basename $f); done 2>/dev/null
}
