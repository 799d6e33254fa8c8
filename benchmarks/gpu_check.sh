#!/usr/bin/env bash
# The GPU checks of issue 18, as one short script for a lent device machine (about 5 minutes
# on an H200): the CUDA tests of the captured step, then epoch times at batch 20, 100 and 1000
# for eager PyTorch, bayesvae.fit and bayesvae.fit(cuda_graphs=True).
#
# The device image has torch with CUDA but not Pyro. Beforehand, here, in the repository root:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl pyro-ppl==1.9.2 pyro-api==0.1.2
# then run with carry [".whl"]:  bash benchmarks/gpu_check.sh
# Results land in $OUT (or benchmarks/results/ when OUT is unset).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
out="${OUT:-benchmarks/results}"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name())" || exit 1
python3 -m pytest -q -p no:cacheprovider tests/infer/test_graphs.py 2>&1 | tee "$out/gpu_tests.log"
rc=${PIPESTATUS[0]}
python3 benchmarks/epoch_time.py --device cuda --rows 10000 --repeats 5 --out "$out/epoch_time_cuda" 2>&1 | tee "$out/epoch_time_cuda.log"
exit $(( rc || PIPESTATUS[0] ))
