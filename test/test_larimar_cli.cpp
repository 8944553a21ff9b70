// larimar_edit (write, forget, read) end to end on a tiny random encoder made here: a written fact
// reads back exactly (relative error ~0), an unwritten or forgotten one does not; a memory file is
// refused through another encoder; bad facts files are clear errors. eval_factoids --memory decodes
// conditioned on each question's readout (the conditioned decoding itself is checked against
// PyTorch in test_larimar_model).
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

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
#include "model/checkpoint.h"
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

// The numeric field `key` of each JSONL line.
std::vector<double> field_values(const std::string& path, const char* key) {
  std::vector<double> e;
  const std::string text = read_text_file(path);
  size_t start = 0;
  for (size_t end; (end = text.find('\n', start)) != std::string::npos; start = end + 1)
    e.push_back(nlohmann::json::parse(text.substr(start, end - start)).at(key).get<double>());
  return e;
}

// relative_error of each JSONL line that `read` wrote.
std::vector<double> relative_errors(const std::string& path) { return field_values(path, "relative_error"); }

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
  // Teacher-forced scores conditioned on the readouts: the same answers, other log-likelihoods.
  REQUIRE(run(eval + " --score --out " + d + "/plain_s", err, "eval_factoids") == 0);
  REQUIRE(run(eval + " --score --memory " + mem + " --larimar " + d + "/lar --out " + d + "/cond_s", err,
              "eval_factoids") == 0);
  const auto plain_lp = field_values(d + "/plain_s/predictions.jsonl", "answer_logprob_sum"),
             cond_lp = field_values(d + "/cond_s/predictions.jsonl", "answer_logprob_sum");
  REQUIRE(plain_lp.size() == 3);
  REQUIRE(cond_lp.size() == 3);
  for (int i = 0; i < 3; i++) CHECK(plain_lp[i] != cond_lp[i]);
  // Each batch takes its own rows of the conditioning: batches of 1 score as batches of 2.
  std::string eval1 = eval;
  eval1.replace(eval1.find("--batch-size 2"), 14, "--batch-size 1");
  REQUIRE(run(eval1 + " --score --memory " + mem + " --larimar " + d + "/lar --out " + d + "/cond_1", err,
              "eval_factoids") == 0);
  const auto one_lp = field_values(d + "/cond_1/predictions.jsonl", "answer_logprob_sum");
  REQUIRE(one_lp.size() == 3);
  for (int i = 0; i < 3; i++) CHECK(std::fabs(one_lp[i] - cond_lp[i]) <= 1e-4 * std::fabs(cond_lp[i]));
  CHECK(predictions(d + "/cond_s/predictions.jsonl") == cond);  // scoring leaves the decoding alone
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
  CHECK(m.at("at_eer_threshold").at("f1").get<double>() == 1);
}

// ---- train_llama --larimar ----------------------------------------------------------------------

namespace {

// The JSON lines of a train_llama --log file with "event": "step".
std::vector<nlohmann::json> step_logs(const std::string& path) {
  std::vector<nlohmann::json> v;
  const std::string text = read_text_file(path);
  size_t start = 0;
  for (size_t end; (end = text.find('\n', start)) != std::string::npos; start = end + 1) {
    nlohmann::json j = nlohmann::json::parse(text.substr(start, end - start));
    if (j.at("event") == "step") v.push_back(j);
  }
  return v;
}

double mean(const std::vector<nlohmann::json>& logs, const char* key, size_t from, size_t to) {
  double s = 0;
  for (size_t i = from; i < to; i++) s += logs.at(i).at(key).get<double>();
  return s / double(to - from);
}

// A tiny corpus of generic text (random sentences over 24 words) as an lm shard of 16-token chunks,
// a decoder config and an encoder config (larimar_code_size 16).
struct LarimarRun {
  std::string d, tok = "test/fixtures/dataloader/tokenizer.json";
  explicit LarimarRun(const std::string& tag) : d(scratch_dir(tag)) {
    const char* words[] = {"the", "a",   "cat",  "dog",  "sky",  "water", "ice",  "fire", "tree", "house", "city", "river",
                           "red", "blue", "green", "big", "small", "old",  "new", "runs", "sees", "likes", "eats", "is"};
    std::mt19937 rng(7);
    std::string text;
    for (int i = 0; i < 64; i++) {
      std::string s;
      const int n = 5 + (int)(rng() % 8);
      for (int w = 0; w < n; w++) s += std::string(w ? " " : "") + words[rng() % 24];
      text += nlohmann::json({{"text", s}}).dump() + "\n";
    }
    write_file_atomic(d + "/corpus.jsonl", text);
    LlamaConfig c = tiny_config();
    c.num_hidden_layers = 2;
    c.initializer_range = 0.02f;
    c.max_position_embeddings = 64;
    write_file_atomic(d + "/dec.json", config_to_json(c).dump(2));
    c.num_hidden_layers = 1;
    nlohmann::json e = config_to_json(c);
    e["larimar_code_size"] = 16;
    write_file_atomic(d + "/enc.json", e.dump(2));
    REQUIRE(run("--mode text --text-mode lm --seq-len 16 --input " + d + "/corpus.jsonl --tokenizer " + tok +
                    " --output " + d + "/text.bin --jsonl " + d + "/text_copy.jsonl",
                d + "/prep.err", "prepare_data") == 0);
  }
  // train_llama --larimar from scratch with the decoder from dec.json.
  // `larimar`: what follows --larimar (default: enc.json with 8 memory slots).
  std::string train(const std::string& out, const std::string& more, const std::string& data = "text.bin",
                    const std::string& larimar = "") const {
    return "--device cpu --threads 1 --init " + d + "/dec.json --tokenizer " + tok + " --larimar " +
           (larimar.empty() ? d + "/enc.json --memory-slots 8" : larimar) + " --data " + d + "/" + data +
           " --batch-size 4 --seq-len 16 --lr 3e-3 --warmup-ratio 0 --out " + d + "/" + out + " " + more;
  }
};

}  // namespace

TEST_CASE("train_llama --larimar: the loss falls, the checkpoint is a Larimar directory that larimar_edit and "
          "eval_factoids --memory use") {
  const LarimarRun r("larimar_train");
  const std::string err = r.d + "/err";
  REQUIRE(run(r.train("run", "--steps 40 --log " + r.d + "/log.jsonl"), err, "train_llama") == 0);
  const auto logs = step_logs(r.d + "/log.jsonl");
  REQUIRE(logs.size() == 40);
  // Every step logs the four terms, and loss = ce_read + ce_code + ce_zero + beta * kl.
  for (const auto& j : logs) {
    const double total = j.at("ce_read").get<double>() + j.at("ce_code").get<double>() +
                         j.at("ce_zero").get<double>() + j.at("beta").get<double>() * j.at("kl").get<double>();
    CHECK(std::fabs(total - j.at("loss").get<double>()) <= 1e-9 * std::fabs(total));
  }
  // Learning: the first five steps against the last five (about 6.4 nats per term at the start).
  INFO("loss " << mean(logs, "loss", 0, 5) << " -> " << mean(logs, "loss", 35, 40));
  CHECK(mean(logs, "loss", 35, 40) < mean(logs, "loss", 0, 5) - 3.0);
  CHECK(mean(logs, "ce_read", 35, 40) < mean(logs, "ce_read", 0, 5) - 0.5);
  // beta follows the cyclic schedule: 10 cycles of 4 steps, 0 for the first half of each, then the
  // ramp of one step (0.25 of 4) to 0.5: steps 0, 1 -> 0; 2 -> 0; 3 -> 0.5.
  CHECK(logs[0].at("beta") == 0.0);
  CHECK(logs[2].at("beta") == 0.0);
  CHECK(logs[3].at("beta") == 0.5);
  CHECK(logs[7].at("beta") == 0.5);

  // The final checkpoint: a decoder directory with encoder/ and larimar.safetensors.
  const std::string ck = r.d + "/run/final";
  for (const char* f : {"/model.safetensors", "/encoder/config.json", "/encoder/model.safetensors",
                        "/encoder/tokenizer.json", "/larimar.safetensors", "/larimar_optimizer.safetensors"})
    CHECK(file_exists(ck + f));
  write_file_atomic(r.d + "/facts.jsonl", "{\"text\": \"the cat is red\", \"question\": \"the cat is\", \"answer\": \"red\"}\n"
                                          "{\"text\": \"the dog sees fire\", \"question\": \"the dog sees\", \"answer\": \"fire\"}\n");
  const std::string mem = r.d + "/mem.safetensors";
  REQUIRE(run("write --encoder " + ck + "/encoder --params " + ck + "/larimar.safetensors --memory " + mem +
                  " --facts " + r.d + "/facts.jsonl",
              err) == 0);
  REQUIRE(run("read --encoder " + ck + "/encoder --memory " + mem + " --facts " + r.d + "/facts.jsonl --output " +
                  r.d + "/read.jsonl",
              err) == 0);
  for (double e : relative_errors(r.d + "/read.jsonl")) CHECK(e < 1e-4);  // written facts read back
  REQUIRE(run("--model " + ck + " --larimar " + ck + " --memory " + mem + " --data " + r.d +
                  "/facts.jsonl --template plain --max-new-tokens 4 --device cpu --quiet --out " + r.d + "/eval",
              err, "eval_factoids") == 0);
  CHECK(predictions(r.d + "/eval/predictions.jsonl").size() == 2);

  SECTION("--freeze-decoder keeps the decoder's weights, and a Larimar directory continues training") {
    REQUIRE(run("--device cpu --threads 1 --model " + ck + " --larimar " + ck + " --freeze-decoder --data " + r.d +
                    "/text.bin --batch-size 4 --seq-len 16 --steps 3 --out " + r.d + "/frozen",
                err, "train_llama") == 0);
    CHECK(read_text_file(r.d + "/frozen/final/model.safetensors") == read_text_file(ck + "/model.safetensors"));
    CHECK(read_text_file(r.d + "/frozen/final/larimar.safetensors") != read_text_file(ck + "/larimar.safetensors"));
    CHECK(read_text_file(r.d + "/frozen/final/encoder/model.safetensors") !=
          read_text_file(ck + "/encoder/model.safetensors"));
  }
}

TEST_CASE("train_llama --larimar: resume is bit-exact") {
  const LarimarRun r("larimar_resume");
  const std::string err = r.d + "/err";
  REQUIRE(run(r.train("a", "--steps 12 --beta-cycles 2"), err, "train_llama") == 0);
  REQUIRE(run(r.train("b", "--steps 12 --beta-cycles 2 --save-every 5 --keep 0"), err, "train_llama") == 0);
  remove_tree(r.d + "/b/final");  // as if killed after checkpoint-10: resume it to the end
  REQUIRE(run("--resume " + r.d + "/b/checkpoint-10", err, "train_llama") == 0);
  for (const char* f : {"/model.safetensors", "/optimizer.safetensors", "/encoder/model.safetensors",
                        "/encoder/config.json", "/larimar.safetensors", "/larimar_optimizer.safetensors"}) {
    INFO(f);
    CHECK(read_text_file(r.d + "/a/final" + f) == read_text_file(r.d + "/b/final" + f));
  }
  // The comparison can fail: a run with another seed differs.
  REQUIRE(run(r.train("c", "--steps 12 --beta-cycles 2 --seed 5"), err, "train_llama") == 0);
  CHECK(read_text_file(r.d + "/a/final/larimar.safetensors") != read_text_file(r.d + "/c/final/larimar.safetensors"));
  // The paper's iterative pseudo-inverse trains too, to other (close, not equal) weights.
  REQUIRE(run(r.train("it", "--steps 12 --beta-cycles 2 --pinv iterative --log " + r.d + "/it.jsonl"), err,
              "train_llama") == 0);
  CHECK(step_logs(r.d + "/it.jsonl").size() == 12);
  CHECK(read_text_file(r.d + "/a/final/larimar.safetensors") != read_text_file(r.d + "/it/final/larimar.safetensors"));
}

TEST_CASE("train_llama --larimar: SIGINT saves a checkpoint with the Larimar files; resuming it is bit-exact") {
  const LarimarRun r("larimar_sigint");
  const std::string err = r.d + "/err", more = "--steps 150 --beta-cycles 3 --log " + r.d + "/";
  REQUIRE(run(r.train("ref", more + "ref.jsonl"), err, "train_llama") == 0);
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const std::string cmd = "exec ./train_llama " + r.train("int", more + "int.jsonl") + " > " + err + ".int 2>&1";
    execl("/bin/sh", "sh", "-c", cmd.c_str(), (char*)nullptr);
    _exit(127);
  }
  // Once a few steps are logged (or after 60 s at most), interrupt.
  for (int i = 0; i < 60000; i++) {
    if (file_exists(r.d + "/int.jsonl") && step_logs(r.d + "/int.jsonl").size() >= 3) break;
    usleep(1000);
  }
  kill(pid, SIGINT);
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  INFO(read_text_file(err + ".int"));
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  if (!file_exists(r.d + "/int/final")) {  // the signal came before the end: a signal checkpoint
    const std::vector<RunCheckpoint> cks = list_run_checkpoints(r.d + "/int");
    REQUIRE(cks.size() == 1);
    CHECK(load_trainer_state(cks[0].dir)["stop_reason"] == "signal");
    for (const char* f : {"/encoder/model.safetensors", "/larimar.safetensors", "/larimar_optimizer.safetensors"})
      CHECK(file_exists(cks[0].dir + f));
    REQUIRE(run("--resume " + r.d + "/int", err, "train_llama") == 0);
  }
  for (const char* f : {"/model.safetensors", "/encoder/model.safetensors", "/larimar.safetensors",
                        "/larimar_optimizer.safetensors"}) {
    INFO(f);
    CHECK(read_text_file(r.d + "/ref/final" + f) == read_text_file(r.d + "/int/final" + f));
  }
}

TEST_CASE("train_llama --larimar: bad input is a clear error") {
  const LarimarRun r("larimar_bad");
  const std::string err = r.d + "/err";
  const auto fails = [&](const std::string& args, const std::string& want, const char* env = "") {
    INFO(args);
    CHECK(std::system((std::string(env) + " ./train_llama " + args + " > " + err + ".out 2> " + err).c_str()) != 0);
    CHECK_THAT(read_text_file(err), Contains("error:") && Contains(want));
  };
  fails(r.train("x", "--steps 2", "none.bin"), "none.bin");
  fails(r.train("x", "--steps 2", "text.bin", r.d + "/enc.json"), "--memory-slots");
  fails("--device cpu --init " + r.d + "/dec.json --tokenizer " + r.tok + " --memory-slots 8 --data " + r.d +
            "/text.bin --out " + r.d + "/x",
        "--memory-slots needs --larimar");
  // An encoder whose vocabulary is smaller than the tokenizer's.
  nlohmann::json e = nlohmann::json::parse(read_text_file(r.d + "/enc.json"));
  e["vocab_size"] = 100;
  write_file_atomic(r.d + "/enc_small.json", e.dump());
  fails(r.train("x", "--steps 2", "text.bin", r.d + "/enc_small.json --memory-slots 8"), "vocab_size");
  // A Larimar directory whose encoder reads another tokenizer.
  REQUIRE(run(r.train("ok", "--steps 1"), err, "train_llama") == 0);
  const std::string other = r.d + "/other";
  make_dirs(other + "/encoder");
  for (const char* f : {"/larimar.safetensors", "/encoder/config.json", "/encoder/model.safetensors"})
    write_file_atomic(other + f, read_text_file(r.d + "/ok/final" + f));
  write_file_atomic(other + "/encoder/tokenizer.json", read_text_file("test/fixtures/dataloader/tokenizer_sp.json"));
  fails(r.train("x", "--steps 2", "text.bin", other), "tokenizer differs");
  // A non-finite gradient stops the run without saving.
  fails(r.train("nan", "--steps 4"), "not finite", "TRAIN_LLAMA_DEBUG_NAN_STEP=3");
  CHECK(!file_exists(r.d + "/nan/final"));
}
