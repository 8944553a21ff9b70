// Per-kernel benchmarks of kernels/cuda/ at model shapes, against the card's roofline (in the
// style of llm.c's dev/cuda: one file per kernel family, a shared harness in dev/cuda/bench.h).
//
//   make kernel-bench && ./build/gpu/kernel_bench                    # llama8b and remix shapes
//   ./build/gpu/kernel_bench --shape remix --only attention,rmsnorm --json out.json
//   ./build/gpu/kernel_bench --card-json                            # the card's ceilings only
// Prints one row per case (median ms, GB/s, TFLOP/s, % of the roof of the unit it runs on) and
// then the cases farthest from their roof. Exits 1 when a case leaves an output non-finite or
// unwritten. The emulator runs the same cases at the "smoke" shape (test/test_cuda_bench.cpp).
#include <cstdlib>
#include <cstring>

#include "dev/cuda/bench.h"
#include "dev/cuda/families.h"

static std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    const size_t comma = s.find(',', start);
    const std::string item = s.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!item.empty()) out.push_back(item);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

static void usage() {
  std::printf(
      "usage: kernel_bench [--shape llama8b,remix,smoke] [--only FAMILY,...] [--warmup N] [--reps N]\n"
      "                    [--json FILE] [--card NAME] [--card-json] [--list]\n"
      "  --shape      shapes to run (default llama8b,remix)\n"
      "  --only       kernel families to run (default all; --list names them)\n"
      "  --warmup     untimed runs per case after the validation run (default 2)\n"
      "  --reps       timed runs per case; the median is reported (default 10)\n"
      "  --json       also write the results as JSON to FILE\n"
      "  --card       roofline of this card instead of the detected one (e.g. 'H100 SXM')\n"
      "  --card-json  print the card's ceilings as JSON and exit\n");
}

static void print_card_json(FILE* f, const char* device, const GpuCard& card, bool assumed) {
  std::fprintf(f, "{\"device\": \"%s\", \"card\": \"%s\", \"assumed\": %s, \"hbm_tb_s\": %.3f, \"bf16_tflops\": %.1f, "
               "\"fp32_tflops\": %.1f, \"source\": \"vendor datasheet, see dev/cuda/roofline.h\"}",
               device, card.name, assumed ? "true" : "false", card.hbm_tb_s, card.bf16_tflops, card.fp32_tflops);
}

int main(int argc, char** argv) {
  std::vector<std::string> shapes = {"llama8b", "remix"}, only;
  int warmup = 2, reps = 10;
  std::string json_path, card_name;
  bool card_json = false;
  for (int i = 1; i < argc; i++) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "error: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--shape") shapes = split(value());
    else if (a == "--only") only = split(value());
    else if (a == "--warmup") warmup = std::atoi(value().c_str());
    else if (a == "--reps") reps = std::atoi(value().c_str());
    else if (a == "--json") json_path = value();
    else if (a == "--card") card_name = value();
    else if (a == "--card-json") card_json = true;
    else if (a == "--list") {
      for (const BenchFamily& f : bench_families()) std::printf("%s\n", f.name);
      return 0;
    } else if (a == "--help" || a == "-h") {
      usage();
      return 0;
    } else {
      std::fprintf(stderr, "error: unknown option %s (see --help)\n", a.c_str());
      return 2;
    }
  }
  for (const std::string& f : only) {
    bool known = false;
    for (const BenchFamily& fam : bench_families()) known = known || f == fam.name;
    if (!known) {
      std::fprintf(stderr, "error: --only: unknown kernel family '%s' (see --list)\n", f.c_str());
      return 2;
    }
  }
  if (warmup < 0 || reps < 1) {
    std::fprintf(stderr, "error: --warmup must be >= 0 and --reps >= 1\n");
    return 2;
  }
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  bool assumed = false;
  const GpuCard& card = gpu_card_for(card_name.empty() ? prop.name : card_name.c_str(), &assumed);
  if (!card_name.empty() && assumed) {
    std::fprintf(stderr, "error: --card: unknown card '%s' (see dev/cuda/roofline.h)\n", card_name.c_str());
    return 2;
  }
  if (card_json) {
    print_card_json(stdout, prop.name, card, assumed);
    std::printf("\n");
    return 0;
  }
  std::printf("device: %s; roofline: %s%s (HBM %.2f TB/s, bf16 tensor %.0f TFLOP/s, fp32 %.1f TFLOP/s)\n", prop.name,
              card.name, assumed ? " (assumed: device not in dev/cuda/roofline.h)" : "", card.hbm_tb_s,
              card.bf16_tflops, card.fp32_tflops);
  std::vector<BenchResult> all;
  for (const std::string& name : shapes) {
    BenchShape shape;
    if (!bench_shape(name, &shape)) {
      std::fprintf(stderr, "error: --shape: unknown shape '%s' (llama8b, remix, smoke)\n", name.c_str());
      return 2;
    }
    Bench b(shape, warmup, reps);
    run_bench_families(b, only);
    all.insert(all.end(), b.results.begin(), b.results.end());
  }
  std::printf("\n%-16s %-36s %-8s %9s %9s %9s %-7s %6s %s\n", "family", "case", "shape", "ms", "GB/s", "TFLOP/s", "roof",
              "%roof", "");
  int bad = 0;
  for (const BenchResult& r : all) {
    const double s = r.ms / 1e3;
    std::printf("%-16s %-36s %-8s %9.4f %9.1f %9.2f %-7s %5.1f%% %s%s%s\n", r.family.c_str(), r.name.c_str(),
                r.shape.c_str(), r.ms, s > 0 ? r.bytes / s / 1e9 : 0.0, s > 0 ? r.flops / s / 1e12 : 0.0,
                roof_name(r.roof), s > 0 ? 100.0 * roof_ms(r, card) / r.ms : 0.0, r.outputs_ok ? "" : "OUTPUT NOT FINITE ",
                r.note.empty() ? "" : "| ", r.note.c_str());
    bad += !r.outputs_ok;
  }
  std::vector<const BenchResult*> order;
  for (const BenchResult& r : all)
    if (r.ms > 0 && r.family != "ceilings") order.push_back(&r);
  std::sort(order.begin(), order.end(), [&](const BenchResult* a, const BenchResult* b) {
    return roof_ms(*a, card) / a->ms < roof_ms(*b, card) / b->ms;
  });
  std::printf("\nfarthest from their roof:\n");
  for (size_t i = 0; i < order.size() && i < 6; i++)
    std::printf("  %5.1f%%  %s / %s (%s): %.3f ms, floor %.3f ms\n", 100.0 * roof_ms(*order[i], card) / order[i]->ms,
                order[i]->family.c_str(), order[i]->name.c_str(), order[i]->shape.c_str(), order[i]->ms,
                roof_ms(*order[i], card));
  if (!json_path.empty()) {
    FILE* f = std::fopen(json_path.c_str(), "w");
    if (!f) {
      std::fprintf(stderr, "error: --json: cannot write %s\n", json_path.c_str());
      return 1;
    }
    std::fprintf(f, "{\"roofline\": ");
    print_card_json(f, prop.name, card, assumed);
    std::fprintf(f, ",\n \"results\": [\n");
    for (size_t i = 0; i < all.size(); i++) {
      const BenchResult& r = all[i];
      const double s = r.ms / 1e3;
      std::fprintf(f, "  {\"family\": \"%s\", \"case\": \"%s\", \"shape\": \"%s\", \"ms\": %.6f, \"ms_min\": %.6f, "
                   "\"bytes\": %.0f, \"flops\": %.0f, \"gb_s\": %.2f, \"tflops\": %.3f, \"roof\": \"%s\", "
                   "\"roof_ms\": %.6f, \"pct_of_roof\": %.2f, \"outputs_ok\": %s, \"note\": \"%s\"}%s\n",
                   r.family.c_str(), r.name.c_str(), r.shape.c_str(), r.ms, r.ms_min, r.bytes, r.flops,
                   s > 0 ? r.bytes / s / 1e9 : 0.0, s > 0 ? r.flops / s / 1e12 : 0.0, roof_name(r.roof),
                   roof_ms(r, card), s > 0 ? 100.0 * roof_ms(r, card) / r.ms : 0.0, r.outputs_ok ? "true" : "false",
                   r.note.c_str(), i + 1 < all.size() ? "," : "");
    }
    std::fprintf(f, " ]}\n");
    std::fclose(f);
  }
  if (bad) {
    std::fprintf(stderr, "error: %d case(s) left outputs non-finite or unwritten\n", bad);
    return 1;
  }
  return 0;
}
