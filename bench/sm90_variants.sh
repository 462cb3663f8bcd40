#!/usr/bin/env bash
# The sm90a head-dim-64 attention variants that flash_fwd_sm90_launch.cuh builds on request, one
# build after another on a GPU machine: for each, the sm90 attention tests (against the float32
# reference) and bench/attention.py at d=64 (sutra beside SDPA's FlashAttention-2 and cuDNN, in
# the same process, so every variant carries its own cuDNN baseline). Reports go to $OUT (or
# bench/results/sm90_variants): NAME.tests.log and NAME.md per variant. The benchmark includes
# the score-bias table (ALiBi, relative) against the unbiased call. SM90_VARIANT_TESTS=0 skips
# the tests (a variant already tested in an earlier call).
#
#   bash bench/sm90_variants.sh                      # every variant below
#   bash bench/sm90_variants.sh default consumers_2  # some of them
#   bash bench/sm90_variants.sh "mine=-DFOO=1"       # NAME=FLAGS: a variant of your own
#
# SM90_VARIANT_SRC=DIR builds the variants from another source tree (its outputs are named
# NAME_src_BASENAME), e.g. an earlier commit's kernels beside today's in one device call:
#   mkdir -p carry/s14 && git archive e65bef8 | tar -x -C carry/s14   # here; carry it along
#   SM90_VARIANT_SRC=carry/s14 bash bench/sm90_variants.sh "consumers_3=-DSUTRA_ATTN_SM90_D64_CONSUMERS=3"
#   bash bench/sm90_variants.sh default
#
# Each variant costs a build (about 40 s on the H200 machine's 16 cores) plus the tests and the
# benchmark; split a long list over several device calls. The last variant stays installed.
set -euo pipefail
cd "$(dirname "$0")/.."

declare -A FLAGS=(
  [default]=""
  [consumers_2]="-DSUTRA_ATTN_SM90_D64_CONSUMERS=2"
  [d64_block_per_tile]="-DSUTRA_ATTN_SM90_D64_PERSISTENT=0"
  [shared_base]="-DSUTRA_ATTN_SM90_SHARED_BASE=1"
  [bias_rework]="-DSUTRA_ATTN_SM90_SHARED_BASE=1 -DSUTRA_ATTN_ALIBI_FLOAT_DISTANCE=1"
)
ORDER=(default consumers_2 d64_block_per_tile shared_base bias_rework)
names=("$@")
[ ${#names[@]} -eq 0 ] && names=("${ORDER[@]}")
out="${OUT:-bench/results/sm90_variants}"
mkdir -p "$out"
export HF_HUB_OFFLINE=1 SUTRA_CUDA_ARCHITECTURES="${SUTRA_CUDA_ARCHITECTURES:-90a-real}"

src="${SM90_VARIANT_SRC:-.}"
for name in "${names[@]}"; do
  if [[ "$name" == *=* ]]; then
    flags="${name#*=}"
    name="${name%%=*}"
  elif [ -n "${FLAGS[$name]+set}" ]; then
    flags="${FLAGS[$name]}"
  else
    echo "unknown variant '$name'; known: ${ORDER[*]}, or NAME=FLAGS" >&2
    exit 2
  fi
  [ "$src" != . ] && name="${name}_src_$(basename "$src")"
  start=$(date +%s)
  # A build folder per variant: the flags stay in its CMake cache, not in the one a plain
  # `pip install .` reuses.
  python3 -m pip install --no-build-isolation --no-deps -q "$src" -C "build-dir=$PWD/build/sm90-$name" \
    -C "cmake.define.CMAKE_CUDA_FLAGS=$flags" > "$out/$name.build.log" 2>&1
  python3 -c "import sutra._core as c; print(c.flash_attention_kernel_info(64, path='sm90'))" \
    > "$out/$name.kernel.txt"
  status=skipped
  if [ "${SM90_VARIANT_TESTS:-1}" != 0 ]; then
    status=passed
    python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_attention.py -k sm90 \
      > "$out/$name.tests.log" 2>&1 || status=FAILED
  fi
  python3 bench/attention.py --lengths 512 2048 4096 8192 --head-dims 64 --bias \
    --dtypes float16 bfloat16 --repeats 10 --markdown "$out/$name.md" > "$out/$name.bench.log" 2>&1
  echo "$name ($flags): tests $status, $(( $(date +%s) - start )) s; $(tail -1 "$out/$name.tests.log" 2>/dev/null)"
done
