#!/usr/bin/env bash
# One prepared GPU session (issue 4): the CUDA-only tests, CIFAR-10 GPU subset, base ResNet-18 (fast recipe), bench_train at the
# reference batch and on the fast path (cached / on-the-fly targets), a short reproduction. <= 8 min on an H200.
# Prints a table last; JSON, Markdown and the full log (suite.log) land under $OUT (8 files at most).
#
# Before the device call, here (in the repo root; skip what exists):
#   python scripts/make_gpu_subset.py --src ../shared/data --dst gpu_data     # 48 MiB, git-ignored
#   echo /.whl/ >> .git/info/exclude; python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux2014_x86_64 -d .whl hydra-core==1.3.8 omegaconf==2.3.1
#   python3 -m pip wheel --no-deps -w .whl antlr4-python3-runtime==4.9.3     # published as an sdist only
#   (what the GPU image lacks; the device tool's README says which)
# Device call:  run(command="bash scripts/gpu_suite.sh", carry=["gpu_data", ".whl"], timeout_s=600); then, here,
#   python scripts/gpu_report.py <files_at>   writes docs/results/gpu_<date>.md (targets met or missed).
# CPU smoke test at tiny sizes:  PARM_SUITE_TINY=1 OUT=/tmp/suite bash scripts/gpu_suite.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu_suite}
PY=${PYTHON:-python3}
TINY=${PARM_SUITE_TINY:-0}
WORK=${PARM_SUITE_WORK:-$(mktemp -d)}
export PYTHONUNBUFFERED=1 HYDRA_FULL_ERROR=1
mkdir -p "$OUT" "$WORK"
exec > >(tee "$OUT/suite.log") 2>&1  # the whole log comes back with the JSON, even if a step fails
stamp() { echo "[gpu_suite $(date +%H:%M:%S)] $*"; }

# ---- environment: the GPU image has torch and Lightning but not Hydra; parm itself is installed --no-deps.
if ! $PY -c "import hydra" 2>/dev/null && [ -d .whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
if ! $PY -c "import parm, parm_coders" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-build-isolation -e . >/dev/null
fi
$PY - <<'PY' | tee "$OUT/hardware.txt"
import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
                    torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
PY

# ---- sizes: full on the GPU, tiny (CPU, seconds) for the smoke test.
if [ "$TINY" = "1" ]; then
  DATA=$WORK/gpu_data; SCALE=0.02; BASE_EPOCHS=1; EPOCHS=1; BASE_BATCH=32
  TRAINER="trainer=cpu model.width=8 data.val_size=50 data.eval_groups_per_batch=8"
  BENCH="--steps 2 --repeats 1 --epochs 1 --budget 2 --eval-every 2"; BENCH_FAST=$BENCH; GPB_FAST=16
  REF_TTA="--skip-reference-tta"; GRAPHS=${PARM_SUITE_GRAPHS:-0}
else
  # 1,000 of the subset's 12,540 training images validate (best checkpoint); the test split is its 5,000.
  DATA=${PARM_GPU_DATA:-gpu_data}; SCALE=1.0; TRAINER="trainer=gpu data.val_size=1000"; BASE_EPOCHS=15; EPOCHS=5; BASE_BATCH=512
  BENCH="--repeats 2 --epochs 2 --budget 150 --eval-every 50"; GPB_FAST=512; REF_TTA=""
  # 512 groups/batch leaves 12 steps per epoch: 10 epochs per throughput figure keep start-up costs small.
  BENCH_FAST="--repeats 2 --epochs 10 --budget 60 --eval-every 50"; GRAPHS=${PARM_SUITE_GRAPHS:-1}
fi
if [ ! -f "$DATA/cifar10_test.npz" ]; then
  SRC=${PARM_SHARED_DATA:-../shared/data}
  if [ ! -f "$SRC/cifar10_gpu_subset_index.npz" ]; then
    echo "gpu_suite: no CIFAR-10 subset in $DATA and no shared data in $SRC to build it from. On the machine" \
         "that has ../shared/data run: python scripts/make_gpu_subset.py --src ../shared/data --dst gpu_data," \
         "then call the device with carry=[\"gpu_data\", \".whl\"]." >&2
    exit 2
  fi
  stamp "building the CIFAR-10 GPU subset into $DATA"
  $PY scripts/make_gpu_subset.py --src "$SRC" --dst "$DATA" --scale $SCALE
fi
COMMON="data=cifar10 model=resnet18 data_dir=$DATA cache_dir=$WORK/cache $TRAINER"

# ---- 0. the tests that need CUDA (skipped in CI): device cache, GPU metrics, no host sync in training steps.
if [ "$TINY" != "1" ]; then
  stamp "pytest -m gpu"
  # Only the files holding them: quicker, and collecting the rest would import modules the image may lack.
  timeout 150 $PY -m pytest -q -m gpu tests/test_data.py tests/test_metrics.py tests/test_progress.py tests/test_bench.py \
    -p no:cacheprovider 2>&1 | tail -15 || stamp "some GPU tests failed (above)"
fi

# ---- 1. base ResNet-18, fast recipe: Adam 2e-3, cosine decay, batch 512, GPU augmentation, bf16.
stamp "training the base ResNet-18 ($BASE_EPOCHS epochs)"
$PY train.py stage=base $COMMON base.epochs=$BASE_EPOCHS base.batch_size=$BASE_BATCH base.optimizer.lr=2e-3 \
  "base.scheduler={_target_: torch.optim.lr_scheduler.CosineAnnealingLR, _partial_: true, T_max: $BASE_EPOCHS}" \
  trainer.enable_progress_bar=false output_dir=$WORK/base hydra.run.dir=$WORK/base 2>&1 | grep -v -i warn | tail -4
BASE=$WORK/base/base.pt

# ---- 2. bench_train: reference batch (64 groups, fp32 reference loop) and the fast path.
BSET="$COMMON base.ckpt=$BASE"
stamp "bench_train: 64 groups/batch vs the reference loop"
$PY scripts/bench_train.py --data cifar10 --model resnet18 --k 2 --encoder concat --groups-per-batch 64 \
  --target 0.52 $BENCH $REF_TTA --skip-plain-tta --work-dir $WORK/bench64 --out "$OUT/bench_b64.json" --set $BSET
for targets in true false; do
  stamp "bench_train: fast path, $GPB_FAST groups/batch, cache_targets=$targets"
  $PY scripts/bench_train.py --data cifar10 --model resnet18 --k 2 --encoder concat --groups-per-batch $GPB_FAST \
    --target 0.58 $BENCH_FAST --skip-reference-tta --work-dir $WORK/bench_fast_$targets \
    --out "$OUT/bench_fast_cache_$targets.json" --set $BSET parity.cache_targets=$targets optimizer.lr=2e-3 \
    parity.lr_scaling=none scheduler=cosine
done

# ---- 3. a short reproduction: CIFAR-10 ResNet-18 k=2 sum and concat, fast path.
stamp "short reproduction"
$PY scripts/reproduce.py --profile full --only "cifar10 resnet18 k=2" --epochs $EPOCHS \
  --out-dir $WORK/reproduce --report "$OUT/accuracy_gpu.md" \
  --set $BSET data.groups_per_batch=$GPB_FAST optimizer.lr=2e-3 scheduler=cosine 2>&1 | grep "^\[reproduce\]"

# ---- 4. if time is left (the suite must end within 8 minutes): CUDA graphs through torch.compile.
if [ "$GRAPHS" = "1" ] && { [ "$TINY" = "1" ] || [ $SECONDS -lt 330 ]; }; then
  stamp "bench_train: fast path, cached targets, parity.compile=reduce-overhead (CUDA graphs)"
  timeout 140 $PY scripts/bench_train.py --data cifar10 --model resnet18 --k 2 --encoder concat \
    --groups-per-batch $GPB_FAST --target 0 $BENCH_FAST --repeats 1 --work-dir $WORK/bench_graphs \
    --out "$OUT/bench_fast_graphs.json" --set $BSET parity.cache_targets=true optimizer.lr=2e-3 \
    parity.lr_scaling=none scheduler=cosine parity.compile=reduce-overhead \
    || stamp "the CUDA-graph row failed or ran out of time; the rows above stand"
else
  stamp "skipping the CUDA-graph row (PARM_SUITE_GRAPHS=$GRAPHS, ${SECONDS}s elapsed)"
fi

# ---- the table, last (the same page scripts/gpu_report.py writes into docs/results/ afterwards).
$PY scripts/gpu_report.py "$OUT" --stdout
