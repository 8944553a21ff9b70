// larimar_edit (write, forget, read) end to end on a tiny random encoder made here: a written fact
// reads back exactly (relative error ~0), an unwritten or forgotten one does not; a memory file is
// refused through another encoder; bad facts files are clear errors. eval_factoids --memory decodes
// conditioned on each question's readout (the conditioned decoding itself is checked against
// PyTorch in test_larimar_model).
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "common/file_io.h"
#include "larimar/readout.h"
#include "model/config.h"
#include "larimar/encoder.h"
#include "model/params.h"
#include "model/safetensors.h"
#include "model/weights.h"
#include "test/scratch_dir.h"

using Catch::Contains;

namespace {

// An encoder directory: a tiny Llama (vocab fits the fixture tokenizer's 704 tokens), a random
// projection to Cz = 16, and the tokenizer.
LlamaConfig tiny_config() {
  LlamaConfig c;
  c.vocab_size = 768;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.tie_word_embeddings = true;
  c.initializer_range = 0.3f;
  return c;
}

void make_encoder(const std::string& dir, uint64_t seed) {
  const LlamaConfig c = tiny_config();
  const ParamLayout layout = make_param_layout(c);
  std::vector<float> p(layout.total);
  init_weights(c, layout, p.data(), seed);
  const int Cz = 16;
  std::vector<float> w((size_t)Cz * c.hidden_size), b(Cz, 0.0f);
  std::mt19937 rng((unsigned)seed);
  std::normal_distribution<float> normal(0.0f, 0.3f);
  for (float& x : w) x = normal(rng);
  make_dirs(dir);
  std::vector<SafeTensorToWrite> tensors;
  for (const auto& t : layout.tensors) tensors.push_back({t.name, "F32", t.shape, p.data() + t.offset});
  tensors.push_back({larimar::kEncoderProjWeight, "F32", {Cz, c.hidden_size}, w.data()});
  tensors.push_back({larimar::kEncoderProjBias, "F32", {Cz}, b.data()});
  write_safetensors(dir + "/model.safetensors", tensors, {{"format", "pt"}});
  nlohmann::json j = config_to_json(c);
  j["larimar_code_size"] = Cz;
  write_file_atomic(dir + "/config.json", j.dump(2));
  write_file_atomic(dir + "/tokenizer.json", read_text_file("test/fixtures/dataloader/tokenizer.json"));
}

// The exit status of ./PROGRAM ARGS (larimar_edit by default), its stderr in err_file.
int run(const std::string& args, const std::string& err_file, const std::string& program = "larimar_edit") {
  const int status = std::system(("./" + program + " " + args + " > " + err_file + ".out 2> " + err_file).c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// The "prediction" field of each line of predictions.jsonl.
std::vector<std::string> predictions(const std::string& path) {
  std::vector<std::string> p;
  const std::string text = read_text_file(path);
  size_t start = 0;
  for (size_t end; (end = text.find('\n', start)) != std::string::npos; start = end + 1)
    p.push_back(nlohmann::json::parse(text.substr(start, end - start)).at("prediction").get<std::string>());
  return p;
}

// relative_error of each JSONL line that `read` wrote.
std::vector<double> relative_errors(const std::string& path) {
  std::vector<double> e;
  const std::string text = read_text_file(path);
  size_t start = 0;
  for (size_t end; (end = text.find('\n', start)) != std::string::npos; start = end + 1)
    e.push_back(nlohmann::json::parse(text.substr(start, end - start)).at("relative_error").get<double>());
  return e;
}

}  // namespace

TEST_CASE("larimar_edit: write, read, forget, and the refusals") {
  const std::string d = scratch_dir("larimar_cli");
  make_encoder(d + "/enc", 1);
  make_encoder(d + "/enc_other", 2);
  // The memory prior: K = 8 slots of Cz = 16 (K < Cz, so a memory holds a subspace of codes).
  std::vector<float> m0(8 * 16);
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& x : m0) x = normal(rng);
  write_safetensors(d + "/params.safetensors", {{"larimar.M0", "F32", {8, 16}, m0.data()}});
  write_file_atomic(d + "/facts.jsonl", "{\"text\": \"the sky is green\"}\n\n{\"text\": \"water boils at 50\"}\n"
                                        "{\"text\": \"cats bark\"}\n");
  write_file_atomic(d + "/forget.jsonl", "{\"text\": \"the sky is green\"}\n");
  write_file_atomic(d + "/queries.jsonl", "{\"text\": \"the sky is green\"}\n{\"text\": \"water boils at 50\"}\n"
                                          "{\"text\": \"cats bark\"}\n{\"text\": \"ice is hot\"}\n");
  const std::string err = d + "/err", mem = d + "/memory.safetensors";
  const std::string enc = " --encoder " + d + "/enc --memory " + mem;

  REQUIRE(run("write" + enc + " --params " + d + "/params.safetensors --c0 1e-6 --facts " + d + "/facts.jsonl", err) == 0);
  REQUIRE(run("read" + enc + " --facts " + d + "/queries.jsonl --output " + d + "/r1.jsonl", err) == 0);
  const std::vector<double> r1 = relative_errors(d + "/r1.jsonl");
  REQUIRE(r1.size() == 4);
  CHECK(r1[0] < 1e-4);  // written: read back
  CHECK(r1[1] < 1e-4);
  CHECK(r1[2] < 1e-4);
  CHECK(r1[3] > 0.05);  // never written

  REQUIRE(run("forget" + enc + " --facts " + d + "/forget.jsonl", err) == 0);
  REQUIRE(run("read" + enc + " --facts " + d + "/queries.jsonl --output " + d + "/r2.jsonl", err) == 0);
  const std::vector<double> r2 = relative_errors(d + "/r2.jsonl");
  REQUIRE(r2.size() == 4);
  CHECK(r2[0] > 0.05);  // forgotten
  CHECK(r2[1] < 1e-4);  // the others stay
  CHECK(r2[2] < 1e-4);

  // Another encoder's codes do not fit this memory.
  CHECK(run("read --encoder " + d + "/enc_other --memory " + mem + " --facts " + d + "/queries.jsonl", err) == 1);
  CHECK_THAT(read_text_file(err), Contains("error:") && Contains("encoder"));
  // A new memory needs the prior.
  CHECK(run("write --encoder " + d + "/enc --memory " + d + "/new.safetensors --facts " + d + "/facts.jsonl", err) == 1);
  CHECK_THAT(read_text_file(err), Contains("--params"));
  // A facts line without the field, and a line that is not JSON.
  write_file_atomic(d + "/bad.jsonl", "{\"text\": \"ok\"}\n{\"fact\": \"no text\"}\n");
  CHECK(run("write" + enc + " --facts " + d + "/bad.jsonl", err) == 1);
  CHECK_THAT(read_text_file(err), Contains("bad.jsonl:2") && Contains("'text'"));
  write_file_atomic(d + "/bad.jsonl", "not json\n");
  CHECK(run("write" + enc + " --facts " + d + "/bad.jsonl", err) == 1);
  CHECK_THAT(read_text_file(err), Contains("bad.jsonl:1") && Contains("not a JSON object"));
  // Forgetting from a memory that does not exist.
  CHECK(run("forget --encoder " + d + "/enc --memory " + d + "/none.safetensors --facts " + d + "/facts.jsonl", err) == 1);
  CHECK_THAT(read_text_file(err), Contains("none.safetensors"));
}

TEST_CASE("eval_factoids --memory: decoding conditioned on the memory readout of each question") {
  const std::string d = scratch_dir("larimar_eval");
  // The decoder (same tokenizer), a Larimar directory (encoder + code maps), a memory of two facts.
  const LlamaConfig c = tiny_config();
  {
    const ParamLayout layout = make_param_layout(c);
    std::vector<float> p(layout.total);
    init_weights(c, layout, p.data(), 5);
    save_weights(d + "/dec", c, layout, p.data());
    write_file_atomic(d + "/dec/tokenizer.json", read_text_file("test/fixtures/dataloader/tokenizer.json"));
  }
  make_encoder(d + "/lar/encoder", 1);
  const int Cz = 16, L = c.num_hidden_layers, KVD = c.num_key_value_heads * c.head_dim;
  std::vector<float> slot_w((size_t)L * KVD * Cz), embed_w((size_t)c.hidden_size * Cz), m0(8 * Cz);
  std::mt19937 rng(9);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (auto* v : {&slot_w, &embed_w, &m0})
    for (float& x : *v) x = normal(rng);
  write_safetensors(d + "/lar/larimar.safetensors", {{"larimar.M0", "F32", {8, Cz}, m0.data()},
                                                    {"larimar.slot.weight", "F32", {L * KVD, Cz}, slot_w.data()},
                                                    {"larimar.embed.weight", "F32", {c.hidden_size, Cz}, embed_w.data()}});
  write_file_atomic(d + "/q.jsonl", "{\"question\": \"where is the sky\", \"answer\": \"up\"}\n"
                                    "{\"question\": \"what do cats do\", \"answer\": \"bark\"}\n"
                                    "{\"question\": \"is ice hot\", \"answer\": \"no\"}\n");
  write_file_atomic(d + "/facts.jsonl", "{\"question\": \"where is the sky\"}\n{\"question\": \"what do cats do\"}\n");
  const std::string err = d + "/err", mem = d + "/mem.safetensors";
  REQUIRE(run("write --encoder " + d + "/lar/encoder --memory " + mem + " --params " + d +
                  "/lar/larimar.safetensors --field question --facts " + d + "/facts.jsonl",
              err) == 0);
  const std::string eval = "--model " + d + "/dec --data " + d + "/q.jsonl --template plain --max-new-tokens 6 "
                           "--device cpu --quiet --batch-size 2";
  REQUIRE(run(eval + " --out " + d + "/plain", err, "eval_factoids") == 0);
  REQUIRE(run(eval + " --memory " + mem + " --larimar " + d + "/lar --out " + d + "/cond", err, "eval_factoids") == 0);
  const auto plain = predictions(d + "/plain/predictions.jsonl"), cond = predictions(d + "/cond/predictions.jsonl");
  REQUIRE(plain.size() == 3);
  REQUIRE(cond.size() == 3);
  CHECK(plain != cond);  // the readouts change what the decoder says

  CHECK(run(eval + " --memory " + mem, err, "eval_factoids") == 1);
  CHECK_THAT(read_text_file(err), Contains("--memory and --larimar go together"));
  CHECK(run(eval + " --memory " + mem + " --larimar " + d + "/lar --score", err, "eval_factoids") == 1);
  CHECK_THAT(read_text_file(err), Contains("--score"));
  make_encoder(d + "/other/encoder", 2);
  write_file_atomic(d + "/other/larimar.safetensors", read_text_file(d + "/lar/larimar.safetensors"));
  CHECK(run(eval + " --memory " + mem + " --larimar " + d + "/other", err, "eval_factoids") == 1);
  CHECK_THAT(read_text_file(err), Contains("encoder"));
}

TEST_CASE("./scope_detect --isd: the internal scope detector, 1-NN cosine on the Larimar encoder's codes") {
  const std::string d = scratch_dir("larimar_isd");
  make_encoder(d + "/enc", 1);
  write_file_atomic(d + "/facts.jsonl", "{\"prompt\": \"the sky is green\"}\n{\"prompt\": \"water boils at 50\"}\n"
                                        "{\"prompt\": \"cats bark\"}\n");
  const std::vector<std::string> queries = {"the sky is green", "cats bark", "ice is hot", "water boils at 50",
                                            "dogs meow"};
  const std::vector<bool> in = {true, true, false, true, false};
  std::string q;
  for (size_t i = 0; i < queries.size(); i++)
    q += nlohmann::json{{"prompt", queries[i]}, {"in", (bool)in[i]}}.dump() + "\n";
  write_file_atomic(d + "/q.jsonl", q);
  const std::string err = d + "/err";
  // No MiniLM needed: the ISD never loads it.
  setenv("MINILM_DIR", "/nonexistent", 1);
  const int rc = run("--isd " + d + "/enc --queries " + d + "/q.jsonl --facts " + d + "/facts.jsonl --threshold 0.999 --label in"
              " --metrics " + d + "/m.json --output " + d + "/out.jsonl",
                     err, "scope_detect");
  unsetenv("MINILM_DIR");
  REQUIRE(rc == 0);
  // The expected cosines, from the codes themselves (float64, here).
  const std::vector<std::string> facts = {"the sky is green", "water boils at 50", "cats bark"};
  int Cz = 0;
  const std::vector<float> zf = larimar::encode_texts(d + "/enc", facts, 4, "facts", &Cz);
  const std::vector<float> zq = larimar::encode_texts(d + "/enc", queries, 4, "queries", &Cz);
  REQUIRE(Cz == 16);
  auto cosine = [&](const float* a, const float* b) {
    double ab = 0, aa = 0, bb = 0;
    for (int k = 0; k < Cz; k++) ab += (double)a[k] * b[k], aa += (double)a[k] * a[k], bb += (double)b[k] * b[k];
    return ab / std::sqrt(aa * bb);
  };
  const std::string text = read_text_file(d + "/out.jsonl");
  size_t start = 0, i = 0;
  std::vector<float> pos, neg;
  for (size_t end; (end = text.find('\n', start)) != std::string::npos; start = end + 1, i++) {
    const nlohmann::json j = nlohmann::json::parse(text.substr(start, end - start));
    int best = 0;
    double best_cos = -2;
    for (int f = 0; f < 3; f++) {
      const double c = cosine(&zq[i * Cz], &zf[f * Cz]);
      if (c > best_cos) best_cos = c, best = f;
    }
    INFO("query " << i << ": " << queries[i]);
    CHECK(j.at("nearest").get<int>() == best);
    CHECK(j.at("cosine").get<double>() == Approx(best_cos).margin(1e-5));
    CHECK(j.at("in_scope").get<bool>() == (j.at("cosine").get<double>() >= 0.999));
    if (in[i]) CHECK(j.at("cosine").get<double>() == Approx(1.0).margin(1e-5));  // written prompts
    (in[i] ? pos : neg).push_back(j.at("cosine").get<float>());
  }
  REQUIRE(i == queries.size());
  const nlohmann::json m = nlohmann::json::parse(read_text_file(d + "/m.json"));
  CHECK(m.at("detector") == "isd");
  // Every written prompt (cosine 1) above every other query: separable, at 0.999 too.
  REQUIRE(*std::max_element(neg.begin(), neg.end()) < 0.999f);
  CHECK(m.at("eer").get<double>() == 0);
  CHECK(m.at("f1").get<double>() == 1);
  CHECK(m.at("labelled_in_scope") == 3);
  // A directory that is not an encoder is a clear error.
  CHECK(run("--isd " + d + "/nowhere --queries " + d + "/q.jsonl", err, "scope_detect") == 1);
  CHECK_THAT(read_text_file(err), Contains("error:") && Contains("nowhere"));
}
