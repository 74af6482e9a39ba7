#!/usr/bin/env bash
# One device call: CUDA checks + GPU benchmarks, for a session that has a GPU machine (device tool).
# The device image has its own python3 with torch (2.11 seen there, not our pinned 2.14.1), so the project
# is used from the tree (PYTHONPATH=.), not pip-installed. Before the call, on the dev machine:
#   echo /.whl/ >> .git/info/exclude; mkdir -p .whl .gpudata
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     pydantic pydantic-core pydantic-settings annotated-types typing-inspection python-dotenv
#   echo /.gpudata/ >> .git/info/exclude; cp ../shared/datasets/cifar10-jpeg.tar.gz .gpudata/
# then: run(command="bash bench/gpu.sh", carry=[".whl", ".gpudata"], timeout_s=590)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PWD:/tmp/site
fi
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

# 1. CUDA path of the library: data loader equality, corruptions on CUDA, a tiny job end to end on cuda.
timeout 240 python3 -m pytest -q -x -p no:cacheprovider tests/kdcore/test_augment.py \
  tests/kdcore/test_corruptions.py tests/kdcore/test_distill.py 2>&1 | tail -n 15 | tee "$OUT/pytest.txt"

# 2. Throughput: project trainer vs plain DataLoader loop, on CUDA, CIFAR-10 JPEG data.
if [ -f .gpudata/cifar10-jpeg.tar.gz ]; then
  mkdir -p /tmp/cifar && tar -xzf .gpudata/cifar10-jpeg.tar.gz -C /tmp/cifar
  data=$(dirname "$(find /tmp/cifar -maxdepth 3 -type d -name train | head -n 1)")
  timeout 180 python3 bench/throughput.py --device cuda --data "$data" --steps 50 --workers 8 \
    | tee "$OUT/throughput.jsonl"
  timeout 120 python3 bench/corruptions.py --device cuda --data "$data/test" | tail -n 1 \
    | tee "$OUT/corruptions.json"
fi

# 3. A published recipe (examples/published/, 240 epochs on CIFAR-100) for 3 epochs each on the CIFAR-10 JPEG
#    copy (CIFAR-100 is not on the device): the per-epoch time on a GPU says what the full recipe costs.
if [ -n "${data:-}" ]; then
  python3 - "$data" > /tmp/published-short.json <<'PY'
import json, sys
spec = json.load(open("examples/published/cifar100-resnet56-resnet20-kd.json"))
short = {"epochs": 3, "milestones": [2]}
spec.update(name="published recipe - 3 epochs on CIFAR-10 JPEG",
            dataset={"source": "imagefolder", "root": sys.argv[1], "val_fraction": 0.02},
            evaluate={"corruptions": "all", "max_images": 2000})
spec["teacher"]["train"].update(short)
spec["train"].update(short)
print(json.dumps(spec))
PY
  timeout 300 python3 -m kdcli.main run /tmp/published-short.json --out /tmp/published-run > /dev/null \
    && python3 -c "import json; r = json.load(open('/tmp/published-run/results.json')); \
print(json.dumps({'timings': r['timings'], 'clean_acc': {k: r[k]['clean_acc'] for k in \
('teacher', 'student_baseline', 'student_kd')}}))" | tee "$OUT/published.json"
fi
