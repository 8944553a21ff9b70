// ./scope_detect: Larimar's scope detectors from the command line. Embeds a JSONL of prompts (one
// unit vector per line), or, given the written facts, says for each query which fact is nearest,
// how similar, and whether the query is in scope. The embedding is all-MiniLM-L6-v2's (the
// external detector, ESD) or, with --isd, the Larimar encoder's code z made a unit vector (the
// internal detector, ISD); the 1-NN cosine, the threshold and the metrics are the same code.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "common/cli.h"
#include "common/error.h"
#include "common/file_io.h"
#include "common/model_cache.h"
#include "dataloader/sources.h"
#include "eval/scope_detector.h"
#include "larimar/readout.h"

using nlohmann::json;

namespace {

// The text field of every record; with `label` non-empty, also that boolean field into *labels.
std::vector<std::string> read_prompts(const std::string& path, const std::string& field,
                                      const std::string& label = "", std::vector<bool>* labels = nullptr) {
  std::vector<std::string> out;
  const std::string text = read_text_file(path);
  for (const TextLine& line : nonblank_lines(text)) {
    json j = json::parse(line.text, nullptr, false);
    if (j.is_discarded() || !j.is_object()) fail(path, ":", line.number, ": not a JSON object");
    if (!j.contains(field) || !j[field].is_string())
      fail(path, ":", line.number, ": field '", field, "' is missing or not a string");
    out.push_back(j[field].get<std::string>());
    if (!label.empty()) {
      if (!j.contains(label) || !j[label].is_boolean())
        fail(path, ":", line.number, ": field '", label, "' (--label) is missing or not true/false");
      labels->push_back(j[label].get<bool>());
    }
  }
  if (out.empty()) fail(path, ": no records");
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    CLI::App app{"Embed prompts with all-MiniLM-L6-v2 (or, with --isd, a Larimar encoder), or match them against "
                 "written facts (1-NN cosine).",
                 "scope_detect"};
    cli::init(app,
              "usage: scope_detect --queries Q.jsonl [--model DIR] [--field NAME] [--output F]\n"
              "       scope_detect --queries Q.jsonl --facts F.jsonl --threshold T [options]");
    std::string model = minilm_dir(), isd, queries, facts, field = "prompt", output, label, metrics;
    double threshold = 2;
    int64_t batch = 32;
    app.add_option("--model", model, "sentence-transformers directory (default: where scripts/install_deps.sh --minilm "
                                      "puts all-MiniLM-L6-v2, $MINILM_DIR)")->option_text("DIR");
    app.add_option("--isd", isd, "the internal scope detector: embed with the Larimar encoder in DIR (an encoder "
                                 "directory with tokenizer.json, as larimar_edit --encoder) instead of MiniLM")
        ->option_text("DIR");
    app.add_option("--queries", queries, "JSONL of the prompts to embed or to match (required)")->option_text("PATH");
    app.add_option("--facts", facts, "JSONL of the written facts: the scope memory")->option_text("PATH");
    app.add_option("--field", field, "the JSON field holding the text in both files (default prompt)")->option_text("NAME");
    app.add_option("--threshold", threshold, "in scope when the nearest fact's cosine is >= T (required with --facts)")
        ->option_text("T")
        ->check(cli::number(-1, 1));
    app.add_option("--batch", batch, "sentences per forward pass (default 32)")->option_text("N")->check(cli::integer(1, 4096));
    app.add_option("--output", output, "write the JSONL here instead of stdout")->option_text("PATH");
    app.add_option("--label", label, "with --facts: a true/false field of each query (true = in scope); adds the "
                                     "equal error rate and F1 to the summary")->option_text("NAME");
    app.add_option("--metrics", metrics, "with --facts: write the summary (counts, and with --label EER, F1, "
                                         "precision, recall at T and at the EER threshold) as JSON here")->option_text("PATH");
    if (int rc = cli::parse_or_usage(app, argc, argv); rc >= 0) return rc;
    check(!queries.empty(), "--queries is required (see --help)");
    check(facts.empty() || threshold <= 1, "--threshold is required with --facts");
    check(!facts.empty() || (label.empty() && metrics.empty()), "--label and --metrics need --facts");

    // Unit vectors [texts, dim] of the detector's embedding.
    int dim = 0;
    SentenceEncoder enc;
    if (isd.empty()) {
      enc = SentenceEncoder::load(model);
      dim = enc.dim();
    }
    auto embed = [&](const std::vector<std::string>& texts, const std::string& what) {
      if (isd.empty()) return enc.embed(texts, int(batch));
      std::vector<float> z = larimar::encode_texts(isd, texts, int(batch), what, &dim);
      normalize_rows(z, dim);
      return z;
    };
    std::vector<bool> labels;
    const std::vector<std::string> q = read_prompts(queries, field, label, &labels);
    const std::vector<float> qe = embed(q, queries);
    std::string out;
    if (facts.empty()) {
      for (size_t i = 0; i < q.size(); ++i) {
        json row = {{field, q[i]}, {"embedding", std::vector<float>(qe.begin() + i * dim, qe.begin() + (i + 1) * dim)}};
        out += row.dump() + "\n";
      }
      std::fprintf(stderr, "scope_detect: %zu prompts embedded (dimension %d)\n", q.size(), dim);
    } else {
      const std::vector<std::string> f = read_prompts(facts, field);
      ScopeDetector det(dim, float(threshold));
      det.write(embed(f, facts).data(), int64_t(f.size()));
      const std::vector<ScopeMatch> matches = det.match(qe.data(), int64_t(q.size()));
      size_t in_scope = 0;
      for (size_t i = 0; i < q.size(); ++i) {
        const ScopeMatch& m = matches[i];
        json row = {{field, q[i]}, {"nearest", m.nearest}, {"nearest_fact", f[m.nearest]},
                    {"cosine", m.cosine}, {"in_scope", m.in_scope}};
        out += row.dump() + "\n";
        in_scope += m.in_scope;
      }
      std::fprintf(stderr, "scope_detect: %zu of %zu queries in scope of %zu facts (threshold %g)\n", in_scope, q.size(),
                   f.size(), threshold);
      json summary = {{"queries", q.size()}, {"facts", f.size()}, {"threshold", threshold}, {"in_scope", in_scope},
                      {"detector", isd.empty() ? "esd" : "isd"}, {"model", isd.empty() ? model : isd}};
      if (!label.empty()) {
        std::vector<float> pos, neg;
        for (size_t i = 0; i < q.size(); ++i) (labels[i] ? pos : neg).push_back(matches[i].cosine);
        const ScopeMetrics m = scope_metrics(pos, neg, threshold);
        // also at the EER threshold itself (in-sample: chosen on these scores)
        const ScopeMetrics e = scope_metrics(pos, neg, m.eer_threshold);
        summary.update({{"labelled_in_scope", pos.size()}, {"labelled_out_of_scope", neg.size()}, {"eer", m.eer},
                        {"eer_threshold", m.eer_threshold}, {"precision", m.precision}, {"recall", m.recall},
                        {"f1", m.f1},
                        {"at_eer_threshold", {{"precision", e.precision}, {"recall", e.recall}, {"f1", e.f1}}}});
        std::fprintf(stderr, "scope_detect: EER %.2f%% at threshold %.4f; at %g: precision %.4f, recall %.4f, F1 %.4f\n",
                     100 * m.eer, m.eer_threshold, threshold, m.precision, m.recall, m.f1);
      }
      if (!metrics.empty()) write_file_atomic(metrics, summary.dump(1) + "\n");
    }
    if (!output.empty()) {
      write_file_atomic(output, out);
    } else {
      check(std::fwrite(out.data(), 1, out.size(), stdout) == out.size(), "stdout: write failed");
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
