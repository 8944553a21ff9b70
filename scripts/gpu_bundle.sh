#!/usr/bin/env bash
# `make gpu-bundle`: prepares .gpu-bundle/, what a bare GPU machine (CUDA toolkit, g++, python3;
# none of our Debian libraries, no network) lacks to build and run the engine from the source tree:
#   include/  catch2/catch.hpp (Catch2 2.x), nlohmann/ (nlohmann-json 3), pcre2.h, CLI/ (CLI11),
#             xxhash.h, xxh3.h
#   lib/      libpcre2-8.a, libxxhash.a: static, so the programs need nothing of the bundle at
#             run time and nothing of this machine's distribution beyond glibc, libstdc++,
#             libgomp (parts of the compiler there) and CUDA
#   env.sh    CPATH / LIBRARY_PATH / LD_LIBRARY_PATH pointing at the bundle, and GEMM=omp: oneDNN
#             (40 MB) is left out and the CPU reference side uses kernels/cpu/sgemm_omp.cpp.
#             Boost.Context is left out too: only the CUDA emulator uses it, and the GPU machine
#             builds no emulated program.
#   MANIFEST  the Debian packages (name, version, sha256 of the .deb) the files came from.
# The files come from the Debian packages themselves (apt-get download + dpkg -x), so the bundle is
# what install_deps.sh installs here. scripts/gpu_check.sh sources env.sh when .gpu-bundle/ exists.
#
#   bash scripts/gpu_bundle.sh            build .gpu-bundle/ (needs apt-get download: network)
#   bash scripts/gpu_bundle.sh --prove    also prove it: copy the source tree and the bundle to
#       build/bundle-proof/src, run `scripts/gpu_check.sh --dry-run` there (the sm_90 build of the
#       programs, the GPU tests and the kernel benchmarks, with the include and library paths of
#       the bundle), then check that every header the build read came from the bundle, the
#       repository, CUDA or the compiler and C library, that no program needs a shared library
#       beyond glibc, libstdc++, libgcc, libgomp and CUDA's, and run the CPU side (prepare_data,
#       train_llama --device cpu with a checkpoint and resume, eval_factoids --device cpu) with
#       LD_LIBRARY_PATH set to the bundle alone.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
prove=0; checks_only=0
for a in "$@"; do
  case "$a" in
    --prove) prove=1 ;;
    --prove-checks) prove=1; checks_only=1 ;;  # the checks again, on the existing proof build
    *) echo "error: gpu_bundle.sh: unknown option $a (use --prove)" >&2; exit 2 ;;
  esac
done

dest="$here/.gpu-bundle"
proof="$here/build/bundle-proof"
if [ $checks_only = 0 ]; then
pkgs=(catch2 nlohmann-json3-dev libpcre2-dev libcli11-dev libxxhash-dev)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download "${pkgs[@]}" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
for p in "${pkgs[@]}"; do
  ls "$tmp"/"${p}"_*.deb >/dev/null 2>&1 || { echo "error: gpu_bundle.sh: apt-get download $p failed" >&2; exit 1; }
done
rm -rf "$dest"
mkdir -p "$dest/include" "$dest/lib" "$tmp/root"
: > "$dest/MANIFEST"
for deb in "$tmp"/*.deb; do
  dpkg -x "$deb" "$tmp/root"
  echo "$(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version) sha256:$(sha256sum "$deb" | cut -c1-64)" >> "$dest/MANIFEST"
done
r="$tmp/root/usr"
cp -r "$r/include/catch2" "$r/include/nlohmann" "$r/include/CLI" "$dest/include/"
cp "$r/include/pcre2.h" "$r/include/xxhash.h" "$r/include/xxh3.h" "$dest/include/"
cp "$r/lib/x86_64-linux-gnu/libpcre2-8.a" "$r/lib/x86_64-linux-gnu/libxxhash.a" "$dest/lib/"
cat > "$dest/env.sh" <<'EOF'
# Sourced by scripts/gpu_check.sh (or by hand) on the GPU machine: the bundle's headers and static
# libraries come before the system's; the CPU GEMM is the OpenMP one (no oneDNN here).
_b="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export CPATH="$_b/include${CPATH:+:$CPATH}"
export LIBRARY_PATH="$_b/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
export LD_LIBRARY_PATH="$_b/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export GEMM=omp
unset _b
EOF
echo "gpu-bundle: $(du -sh "$dest" | cut -f1) in .gpu-bundle/ ($(wc -l < "$dest/MANIFEST") packages); source tree $(git ls-files -z | du -ch --files0-from=- 2>/dev/null | tail -n 1 | cut -f1)"
fi
[ $prove = 1 ] || exit 0

# ---- proof ---------------------------------------------------------------------------------------
if [ $checks_only = 0 ]; then
rm -rf "$proof"
mkdir -p "$proof/src"
# what the device tool sends: tracked and untracked-not-ignored files, plus the carried bundle
git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$proof/src"
cp -r "$dest" "$proof/src/.gpu-bundle"
cd "$proof/src"
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
cuda_home=$(dirname "$(dirname "$(readlink -f "$(echo "$NVCC" | awk '{print $NF}')")")")
git init -q . && git add -A >/dev/null 2>&1 && git -c user.email=p@p -c user.name=proof commit -qm proof >/dev/null 2>&1 || true
echo "== gpu_check.sh --dry-run in $proof/src (the sm_90 build from the bundle)"
# (this machine's cores are fewer than the GPU machine's 16: a longer build limit)
bash scripts/gpu_check.sh --dry-run --arch 90 --jobs "$(nproc)" --build-limit 5400 --budget 6000 --out "$proof/dry-run" || true
status=$(python3 -c "import json; s=json.load(open('$proof/dry-run/gpu_check.json')); print(' '.join(x['name']+'='+x['status'] for x in s['stages']))")
echo "stages: $status"
for need in build=ok bench-data=ok; do
  [[ " $status " == *" $need "* ]] || { echo "error: bundle proof: stage ${need%=*} did not pass" >&2; exit 1; }
done
else
  cd "$proof/src"
  NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
  cuda_home=$(dirname "$(dirname "$(readlink -f "$(echo "$NVCC" | awk '{print $NF}')")")")
fi
# the environment the build had (gpu_check.sh sources the same file)
# shellcheck source=/dev/null
source .gpu-bundle/env.sh

echo "== headers every translation unit of the build reads (system headers included), by origin"
# -MMD dependency files omit system headers, so each compiled source is preprocessed again with -M.
: > "$proof/deps.txt"
for d in $(find build-gemm-omp -name '*.d'); do
  src=$(sed -n '1s/^[^:]*: *\([^ \\]*\).*/\1/p' "$d")
  [ -f "$src" ] || continue
  case "$d" in
    build-gemm-omp/gpu/*) $NVCC -M -std=c++20 -I. -Xcompiler -fopenmp -x cu "$src" ;;
    *) g++ -M -std=c++20 -fopenmp -I. -DENGINE_CUDA -DENGINE_USE_NVTX -I"$cuda_home/include" -x c++ "$src" ;;
  esac >> "$proof/deps.txt" 2>> "$proof/deps.err" || { echo "error: bundle proof: cannot preprocess $src" >&2; exit 1; }
done
tr ' \\' '\n\n' < "$proof/deps.txt" | grep -E '^/' | sed 's/:$//' | xargs realpath -s | sort -u > "$proof/headers.txt"
allowed_pkgs='^(libc6-dev|linux-libc-dev|libstdc\+\+-[0-9]+-dev|libgcc-[0-9]+-dev|gcc-[0-9]+|g\+\+-[0-9]+|cpp-[0-9]+)(:[a-z0-9]+)?:'
grep -v -e "^$proof/src/" -e '^/usr/local/cuda' "$proof/headers.txt" > "$proof/system_headers.txt" || true
bad=0
echo "   $(wc -l < "$proof/headers.txt") headers: $(grep -c "^$proof/src/.gpu-bundle/" "$proof/headers.txt") from the bundle," \
     "$(grep -c '^/usr/local/cuda' "$proof/headers.txt") from CUDA, $(wc -l < "$proof/system_headers.txt") from system packages:"
xargs -r -a "$proof/system_headers.txt" dpkg -S > "$proof/owners.txt" 2>&1 || true  # "pkg[:arch]: path", or an error
cut -d: -f1 "$proof/owners.txt" | sort | uniq -c | sed 's/^/     /'
if grep -Ev "$allowed_pkgs" "$proof/owners.txt" | sed 's/^/   not from the toolchain: /' | grep .; then bad=1; fi
[ $bad = 0 ] || { echo "error: bundle proof: the build read headers from outside the bundle and the toolchain" >&2; exit 1; }

echo "== shared libraries of the programs (ldd, LD_LIBRARY_PATH = the bundle only)"
allowed_libs='^(linux-vdso|ld-linux-x86-64|libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s|libgomp|libcudart|libcublasLt|libcublas)\.'
for b in train_llama eval_factoids prepare_data tokenize build-gemm-omp/gpu/*; do
  [ -x "$b" ] && [ -f "$b" ] || continue
  libs=$(env -i LD_LIBRARY_PATH="$proof/src/.gpu-bundle/lib" ldd "$b" | awk '{print $1}' | xargs -n1 basename)
  for l in $libs; do
    [[ "$l" =~ $allowed_libs ]] || { echo "   $b needs $l"; bad=1; }
  done
  echo "   $b: $(echo $libs | tr '\n' ' ')"
done
[ $bad = 0 ] || { echo "error: bundle proof: a program needs a shared library the GPU machine lacks" >&2; exit 1; }

echo "== the CPU side with LD_LIBRARY_PATH = the bundle only"
run() { env -i PATH=/usr/bin:/bin HOME="$HOME" LD_LIBRARY_PATH="$proof/src/.gpu-bundle/lib" OMP_NUM_THREADS=2 "$@"; }
t="$proof/cpu"; mkdir -p "$t"
cat > "$t/tiny.json" <<'EOF'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 3008, "hidden_size": 128,
 "intermediate_size": 200, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
 "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false,
 "initializer_range": 0.02, "bos_token_id": 0, "eos_token_id": 1}
EOF
tok=test/fixtures/tokenizer/ours.json
run ./prepare_data --mode kvr --num 16 --seed 1 --tokenizer $tok --output "$t/kvr.bin" --quiet
run ./train_llama --init "$t/tiny.json" --tokenizer $tok --data "$t/kvr.bin" --device cpu --steps 4 --batch-size 8 \
  --seq-len 48 --lr 1e-3 --save-every 2 --out "$t/run" --log "$t/run.jsonl" > "$t/train.log"
run ./train_llama --resume "$t/run/checkpoint-2" --out "$t/resumed" --log "$t/resumed.jsonl" > "$t/resume.log"
cmp "$t/run/final/model.safetensors" "$t/resumed/final/model.safetensors"
run ./eval_factoids --model "$t/run/final" --data "$t/kvr.jsonl" --device cpu --out "$t/eval" > "$t/eval.log"
tail -n 1 "$t/train.log"; tail -n 1 "$t/eval.log"
echo "gpu-bundle proof: ok (resumed run byte-identical; logs in $proof)"
