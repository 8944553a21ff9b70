#!/usr/bin/env bash
# Compile statistics of every CUDA kernel in kernels/cuda/: registers, shared memory, stack and
# spill bytes per kernel from `nvcc -Xptxas -v`, for each architecture (default sm_80 and sm_90),
# as a markdown table. Exits 1 if any kernel spills, if nvcc prints a warning, or if a kernel is
# missing from the compiled code. Slow (two full device compiles): not part of `make test`.
#
#   bash dev/cuda_stats.sh                # sm_80 and sm_90
#   GPU_ARCH="90" bash dev/cuda_stats.sh  # one architecture
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
ARCHS=${GPU_ARCH:-80 90}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# One translation unit with every kernel header; the backend .cu instantiates the templates that
# the model uses, the explicit instantiation adds AdamW with bf16 state.
{
  echo '#include "kernels/cuda_backend.cu"'
  for f in kernels/cuda/*.cuh; do echo "#include \"$f\""; done
  echo 'template void adamw_update<bf16>(float*, bf16*, const float*, bf16*, bf16*, size_t, const AdamWHyper&, float, const float*, uint32_t, cudaStream_t);'
} > "$tmp/all_kernels.cu"

status=0
for arch in $ARCHS; do
  if ! "$NVCC" -std=c++17 -O3 -arch=sm_$arch -Xptxas -v -Xptxas -warn-spills -Xcompiler -Wall -I. \
      -c "$tmp/all_kernels.cu" -o "$tmp/sm_$arch.o" > "$tmp/sm_$arch.log" 2>&1; then
    cat "$tmp/sm_$arch.log" >&2
    echo "error: nvcc failed for sm_$arch" >&2
    exit 1
  fi
  if grep -qi "warning" "$tmp/sm_$arch.log"; then
    grep -i "warning" "$tmp/sm_$arch.log" >&2
    status=1
  fi
  # ptxas prints, per kernel: "Compiling entry function 'MANGLED' for 'sm_XX'", then
  # "Function properties ...", "N bytes stack frame, S bytes spill stores, L bytes spill loads",
  # "Used R registers, ... B bytes smem, ...".
  awk -v arch="$arch" '
    /Compiling entry function/ { match($0, /\047[^\047]+\047/); name = substr($0, RSTART + 1, RLENGTH - 2) }
    /bytes stack frame/ { stack = $1; spill_st = $5; spill_ld = $9 }
    /Used [0-9]+ registers/ {
      regs = $0; sub(/.*Used /, "", regs); sub(/ registers.*/, "", regs)
      smem = 0; if (match($0, /[0-9]+ bytes smem/)) { smem = substr($0, RSTART, RLENGTH); sub(/ bytes smem/, "", smem) }
      print name "\t" arch "\t" regs "\t" smem "\t" stack "\t" spill_st + spill_ld
    }' "$tmp/sm_$arch.log" >> "$tmp/rows.tsv"
done

# Demangle, keep "name<template args>" without the parameter list.
cut -f1 "$tmp/rows.tsv" | c++filt | sed -E 's/^void //; s/\(.*$//' > "$tmp/names.txt"
paste "$tmp/names.txt" <(cut -f2- "$tmp/rows.tsv") > "$tmp/table.tsv"

# one row per kernel, one column group per architecture
awk -F'\t' -v archs="$ARCHS" '
  { key = $1; if (!(key in seen)) { seen[key] = 1; order[n++] = key }
    regs[key, $2] = $3; smem[key, $2] = $4; stack[key, $2] = $5; spill[key, $2] = $6 }
  END {
    na = split(archs, a, " ")
    printf "| kernel |"; for (i = 1; i <= na; i++) printf " sm_%s regs | sm_%s smem (B) | sm_%s stack (B) | sm_%s spills (B) |", a[i], a[i], a[i], a[i]; printf "\n"
    printf "| --- |"; for (i = 1; i <= na; i++) printf " ---: | ---: | ---: | ---: |"; printf "\n"
    # sort the kernel names
    for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (order[j] < order[i]) { t = order[i]; order[i] = order[j]; order[j] = t }
    for (i = 0; i < n; i++) {
      k = order[i]; printf "| `%s` |", k
      for (j = 1; j <= na; j++) printf " %s | %s | %s | %s |", regs[k, a[j]], smem[k, a[j]], stack[k, a[j]], spill[k, a[j]]
      printf "\n"
    }
  }' "$tmp/table.tsv"
echo
echo "dynamic shared memory (set at launch): rmsnorm_backward_kernel uses C*4 bytes (16 KiB at C=4096)."

spills=$(awk -F'\t' '$6 > 0' "$tmp/table.tsv" | wc -l)
if [ "$spills" -ne 0 ]; then
  echo "error: $spills kernel(s) spill registers" >&2
  status=1
fi
# every __global__ declared in kernels/cuda must appear in the compiled code
for k in $(grep -ohE '__global__ +void +(__launch_bounds__ *\([^)]*\) *)?[A-Za-z_][A-Za-z0-9_]*' kernels/cuda/*.cuh | awk '{print $NF}' | sed -E 's/.*\)//'); do
  if ! grep -q "^$k\b" "$tmp/names.txt"; then
    echo "error: kernel $k is not in the compiled code" >&2
    status=1
  fi
done
exit $status
