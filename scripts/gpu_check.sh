#!/usr/bin/env bash
# The one command for a GPU lease: proves and measures the CUDA path in under 10 minutes.
#
#   bash scripts/gpu_check.sh [--out DIR]        on the GPU machine (from the source tree, with the
#                                               bundle of `make gpu-bundle` in .gpu-bundle/ if the
#                                               machine lacks our libraries)
#   bash scripts/gpu_check.sh --dry-run          anywhere: lists every stage with its time limit and
#                                               command, and runs the CPU-side stages (the build for
#                                               --arch, default sm_90; the benchmark data; the summary)
#
# Stages, in order (each under `timeout`: a hang costs its stage, never the lease; all of them
# together under --budget seconds, default 540, the build included):
#   environment   GPU name, compute capability, memory, driver, nvcc, g++, ncu, CPUs, bundle
#   build         make -j<cores> GPU_ARCH=<detected> all test-gpu (programs, GPU tests, kernel_bench)
#   gpu-tests     test_cuda_kernels, test_cuda_train (every kernel and whole training steps and greedy
#                 decoding vs the CPU backend, the emulator's tests built by nvcc)
#   cpu-vs-cuda   test_cuda_cli on the real programs: train_llama --device cuda vs --device cpu on a
#                 tiny model (step losses, gradient norms, final weights), resume from a checkpoint
#                 (bit-exact), eval_factoids --device cuda vs cpu on a memorized tiny model
#   kernel-bench  build/gpu/kernel_bench: every kernel family at Llama-3-8B and REMIX shapes vs roofline
#   bench-data    the training benchmark's inputs (a Llama-3.2-1B-shaped config, a KVR shard, a
#                 2048-token LM shard cut from this repository's sources)
#   train-remix   train_llama --init (1B shape, random init) --device cuda, REMIX batch: 32 packed
#                 factoid examples per step; tokens/s and MFU
#   train-2048    the same at 4 x 2048 tokens per step
#   decode        eval_factoids --device cuda on the train-remix checkpoint: greedy-decode tokens/s
#   ncu           if ncu is installed: kernel metrics of the heaviest kernels (--clock-control none)
# Then scripts/gpu_check_summary.py writes DIR/gpu_check.json and DIR/gpu_check.md, and the logs go
# into DIR/logs.tar.gz (3 files: what the device tool brings back).
#
# Options: --out DIR (default build/gpu_check/<UTC time>), --dry-run, --arch N (e.g. 90; default:
# detected, else 90), --jobs N (default: all cores), --budget S (default 540), --build-limit S
# (default 400; for slow machines), --no-build (dry run:
# skip the build), --only STAGE,... (run these stages only), --selftest (runs a synthetic plan
# with a passing, a failing, a hanging and a dependent stage: tests this script's own logic).
set -uo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"

out=""; dry=0; arch=""; jobs="$(nproc 2>/dev/null || echo 4)"; budget=540; build=1; only=""; selftest=0
build_limit=400
usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --dry-run) dry=1; shift ;;
    --arch) arch="${2#sm_}"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --budget) budget="$2"; shift 2 ;;
    --build-limit) build_limit="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    --only) only=",$2,"; shift 2 ;;
    --selftest) selftest=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$budget" =~ ^[0-9]+$ ]] || { echo "error: --budget: '$budget' is not a number of seconds" >&2; exit 2; }
[[ "$jobs" =~ ^[0-9]+$ ]] || { echo "error: --jobs: '$jobs' is not a number" >&2; exit 2; }
[ -z "$out" ] && out="build/gpu_check/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$here/build/gpu_check_work.$$"; logs="$work/logs"  # scratch; its logs end in DIR/logs.tar.gz
rm -rf "$work"; mkdir -p "$logs"
start=$(date +%s)
deadline=$((start + budget))
reserve=20  # seconds kept for the summary and the archive

# ---- the bundle (make gpu-bundle): headers and static libraries this machine may lack ----------
if [ -f .gpu-bundle/env.sh ]; then
  # shellcheck source=/dev/null
  source .gpu-bundle/env.sh  # CPATH, LIBRARY_PATH, LD_LIBRARY_PATH, GEMM=omp
fi
bdir=build; [ "${GEMM:-dnnl}" = omp ] && bdir=build-gemm-omp
# With the bundle, install_deps.sh (apt-get) is replaced by it: mark the dependencies as present.
if [ -f .gpu-bundle/env.sh ]; then mkdir -p "$bdir" && touch "$bdir/.deps-installed"; fi

# ---- the GPU and its architecture ----------------------------------------------------------------
gpu_name=""; gpu_cc=""
if command -v nvidia-smi >/dev/null 2>&1; then
  line=$(timeout 20 nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader 2>/dev/null | head -n 1)
  gpu_name=$(echo "$line" | cut -d, -f1 | sed 's/^ *//; s/ *$//')
  gpu_cc=$(echo "$line" | cut -d, -f2 | tr -d ' ')
fi
if [ -z "$arch" ]; then
  if [[ "$gpu_cc" =~ ^[0-9]+\.[0-9]+$ ]]; then arch="${gpu_cc/./}"; else arch=90; fi
fi
have_gpu=0; [ -n "$gpu_name" ] && have_gpu=1
[ $dry = 1 ] && have_gpu=0
nvcc_bin=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true)
ncu_bin=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -n 1 || true)
big="$work/big"  # the 1B checkpoints (~20 GB): tmpfs when it has room
if [ -d /dev/shm ] && [ -w /dev/shm ] && [ "$(df -Pk /dev/shm | awk 'NR==2 {print $4}')" -gt 50000000 ] 2>/dev/null; then
  big="/dev/shm/gpu_check.$$"
fi
trap 'rm -rf "$big"; [ -n "${GPU_CHECK_KEEP_WORK:-}" ] || rm -rf "$work"' EXIT

# ---- stages --------------------------------------------------------------------------------------
names=(); limits=(); kinds=(); deps=(); cmds=()
# add NAME LIMIT KIND DEPENDS COMMAND; KIND: cpu (runs in a dry run too) | gpu (needs the GPU) |
# gpu-opt (needs the GPU and a tool that may be absent: a missing tool skips it)
add() { names+=("$1"); limits+=("$2"); kinds+=("$3"); deps+=("$4"); cmds+=("$5"); }

tok=test/fixtures/tokenizer/ours.json
bin="$bdir/gpu"
env_cmd="echo gpu_name=$(printf %q "$gpu_name"); echo compute_cap=$gpu_cc; echo arch=sm_$arch;
  nvidia-smi --query-gpu=memory.total,driver_version,clocks.max.sm,power.limit --format=csv 2>&1 | sed 's/^/nvidia-smi: /';
  echo nvcc=\$( ${nvcc_bin:-nvcc} --version 2>&1 | grep -o 'release [0-9.]*' ); echo gxx=\$(g++ -dumpfullversion 2>&1);
  echo ncu=${ncu_bin:-none}; echo cpus=\$(nproc); echo mem_gib=\$(awk '/MemTotal/ {printf \"%.0f\", \$2/1048576}' /proc/meminfo);
  echo bundle=\$( [ -f .gpu-bundle/env.sh ] && echo .gpu-bundle || echo none ); echo gemm=${GEMM:-dnnl};
  echo git=\$(git rev-parse --short HEAD 2>/dev/null || echo unknown); echo big_dir=$big"
kernel_regex='attention|rmsnorm|rope|swiglu|cross_entropy|adamw|embedding|decode|global_norm|argmax'
if [ $selftest = 1 ]; then
  add environment 10 cpu "" "$env_cmd"
  add passes 10 cpu "" "echo fine"
  add fails 10 cpu "" "echo about to fail; exit 3"
  add hangs 2 cpu "" "echo hanging; sleep 60"
  add after-fail 10 cpu fails "echo never runs"
else
  add environment 20 cpu "" "$env_cmd"
  if [ $build = 1 ]; then
    add build "$build_limit" cpu "" "make -j$jobs BUILD=$bdir GPU_ARCH=$arch all test-gpu"
  else
    add build "$build_limit" skip "" "make -j$jobs BUILD=$bdir GPU_ARCH=$arch all test-gpu"
  fi
  add gpu-tests 90 gpu build "bash test/run_tests.sh $bin/test_cuda_kernels $bin/test_cuda_train"
  add cpu-vs-cuda 150 gpu build "CUDA_TRAIN_LLAMA=./train_llama CUDA_EVAL_FACTOIDS=./eval_factoids bash test/run_tests.sh $bin/test_cuda_cli"
  add kernel-bench 90 gpu build "$bin/kernel_bench --json $work/kernel_bench.json"
  add bench-data 60 cpu build "($bin/kernel_bench --card-json > $work/card.json || rm -f $work/card.json) &&
    python3 scripts/gpu_check_summary.py --write-config $work/llama-3.2-1b.json &&
    ./prepare_data --mode kvr --num 320 --seed 7 --template tulu --tokenizer $tok --output $work/kvr.bin &&
    cat README.md kernels/cuda/*.cuh kernels/cpu/*.cpp model/*.h model/*.cpp tokenizer/*.cpp dataloader/*.cpp test/*.cpp > $work/text.txt &&
    ./prepare_data --mode text --text-mode lm --seq-len 2048 --input $work/text.txt --tokenizer $tok --output $work/lm2048.bin"
  train="./train_llama --init $work/llama-3.2-1b.json --tokenizer $tok --device cuda --steps 10 --lr 1e-5 --warmup-ratio 0 --schedule constant --save-dtype BF16"
  add train-remix 120 gpu bench-data "$train --data $work/kvr.bin --batch-size 32 --seq-len 2048 --log $work/train_remix.jsonl --out $big/remix"
  add train-2048 120 gpu bench-data "$train --data $work/lm2048.bin --batch-size 4 --seq-len 2048 --truncate 1 --log $work/train_2048.jsonl --out $big/seq2048; rc=\$?; rm -rf $big/seq2048; exit \$rc"
  add decode 60 gpu train-remix "./eval_factoids --model $big/remix/final --data $work/kvr.jsonl --device cuda --batch-size 32 --max-new-tokens 64 --limit 320 --out $work/decode"
  add ncu 90 gpu-opt build "${ncu_bin:-ncu} --clock-control none --kernel-name-base function --kernel-name regex:'$kernel_regex' --launch-count 62 --metrics gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed,sm__warps_active.avg.pct_of_peak_sustained_active,launch__registers_per_thread --csv $bin/kernel_bench --shape llama8b --warmup 0 --reps 1 > $work/ncu.csv"
fi

# ---- run ----------------------------------------------------------------------------------------
stages_jsonl="$work/stages.jsonl"; : > "$stages_jsonl"
declare -A status
json_str() {  # a JSON string literal
  local s=${1//\\/\\\\}; s=${s//\"/\\\"}; s=${s//$'\n'/\\n}; s=${s//$'\t'/\\t}; printf '"%s"' "$s"
}
record() {  # name status rc seconds limit kind command
  printf '{"name": %s, "status": "%s", "rc": %s, "seconds": %s, "limit_s": %s, "kind": "%s", "command": %s, "log": "logs/%s.log"}\n' \
    "$(json_str "$1")" "$2" "$3" "$4" "$5" "$6" "$(json_str "$7")" "$1" >> "$stages_jsonl"
  status[$1]=$2
  printf '%-13s %-8s %4ss (limit %ss)\n' "$1" "$2" "$4" "$5"
}
echo "gpu_check: $([ $dry = 1 ] && echo 'dry run, ')GPU '${gpu_name:-none}', building for sm_$arch with $jobs jobs, budget ${budget}s, output $out"
for i in "${!names[@]}"; do
  name=${names[$i]}; limit=${limits[$i]}; kind=${kinds[$i]}; dep=${deps[$i]}; cmd=${cmds[$i]}
  log="$logs/$name.log"
  if [ $dry = 1 ]; then
    printf '\n[%s] limit %ss, %s%s\n  %s\n' "$name" "$limit" "$kind" "${dep:+, after $dep}" "$cmd"
  fi
  if [ -n "$only" ] && [[ "$only" != *",$name,"* ]] && [ "$name" != environment ]; then
    record "$name" skipped 0 0 "$limit" "$kind" "$cmd"; echo "not selected (--only)" > "$log"; continue
  fi
  if [ "$kind" = skip ]; then
    record "$name" skipped 0 0 "$limit" "$kind" "$cmd"; echo "skipped (--no-build)" > "$log"; continue
  fi
  if [ "$kind" != cpu ] && [ $have_gpu = 0 ]; then
    record "$name" skipped 0 0 "$limit" "$kind" "$cmd"
    echo "skipped: $([ $dry = 1 ] && echo 'dry run' || echo 'no GPU found by nvidia-smi')" > "$log"; continue
  fi
  if [ "$kind" = gpu-opt ] && [ "$name" = ncu ] && [ -z "$ncu_bin" ]; then
    record "$name" skipped 0 0 "$limit" "$kind" "$cmd"; echo "skipped: ncu not installed" > "$log"; continue
  fi
  if [ -n "$dep" ] && [ "${status[$dep]:-}" != ok ] && ! { [ "$dep" = build ] && [ "${status[build]:-}" = skipped ]; }; then
    record "$name" skipped 0 0 "$limit" "$kind" "$cmd"; echo "skipped: stage $dep did not pass" > "$log"; continue
  fi
  left=$((deadline - $(date +%s) - reserve))
  if [ $left -lt 5 ]; then
    record "$name" skipped 0 0 "$limit" "$kind" "$cmd"; echo "skipped: the ${budget}s budget is spent" > "$log"; continue
  fi
  eff=$limit; [ $left -lt $eff ] && eff=$left
  t0=$(date +%s)
  { echo "\$ $cmd"; echo "(limit ${eff}s)"; } > "$log"
  timeout -k 10 "$eff" bash -c "$cmd" >> "$log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - t0 ))
  if [ $rc = 0 ]; then st=ok; elif [ $rc = 124 ] || [ $rc = 137 ]; then st=timeout; else st=fail; fi
  record "$name" "$st" "$rc" "$secs" "$eff" "$kind" "$cmd"
  if [ $st != ok ]; then tail -n 15 "$log" | sed 's/^/    | /'; fi
done

# ---- summary --------------------------------------------------------------------------------------
total=$(( $(date +%s) - start ))
timeout 60 python3 scripts/gpu_check_summary.py --work "$work" --out "$out" --total-seconds "$total" \
  --budget "$budget" $([ $dry = 1 ] && echo --dry-run) > "$logs/summary.log" 2>&1
src=$?
[ $src = 0 ] || { echo "error: the summary failed:"; cat "$logs/summary.log"; }
tar -czf "$out/logs.tar.gz" -C "$work" --exclude='*.bin' --exclude=text.txt . 2>/dev/null
echo
[ -f "$out/gpu_check.md" ] && cat "$out/gpu_check.md"
echo "gpu_check: ${total}s; $out/gpu_check.json, $out/gpu_check.md, $out/logs.tar.gz"
failed=0
for n in "${names[@]}"; do case "${status[$n]}" in fail|timeout) failed=$((failed + 1)) ;; esac; done
[ $src = 0 ] && [ $failed = 0 ]
