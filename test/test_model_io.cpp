// Model I/O: config.json parsing and refusal of unsupported fields, safetensors validation, and
// the weights round trip. Every bad-input case must name the file and the field or tensor.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "common/file_io.h"
#include "model/config.h"
#include "model/params.h"
#include "model/safetensors.h"
#include "model/weights.h"

using Catch::Contains;
using nlohmann::json;

static std::string tmpdir(const std::string& tag) {
  std::string d = "build/test/tmp_model_io_" + tag + "_" + std::to_string(getpid());
  remove_tree(d);
  make_dirs(d);
  return d;
}

static json tiny_config() {
  return json{{"architectures", {"LlamaForCausalLM"}}, {"vocab_size", 50}, {"hidden_size", 24},
              {"intermediate_size", 40}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
              {"num_key_value_heads", 2}, {"rms_norm_eps", 1e-6}, {"rope_theta", 500000.0},
              {"max_position_embeddings", 128}, {"tie_word_embeddings", false},
              {"bos_token_id", 1}, {"eos_token_id", {2, 3}}, {"initializer_range", 0.02}};
}

static void write_bytes(const std::string& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}

TEST_CASE("config.json: Llama, Mistral and Qwen2 fields") {
  json j = tiny_config();
  LlamaConfig c = parse_config(j, "cfg.json");
  REQUIRE(c.head_dim == 6);
  REQUIRE(c.num_key_value_heads == 2);
  REQUIRE(c.eos_token_id == std::vector<int>{2, 3});
  REQUIRE(c.bos_token_id == std::vector<int>{1});
  REQUIRE_FALSE(c.attention_bias);
  REQUIRE(c.rope_scaling.rope_type.empty());

  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 64}};
  c = parse_config(j, "cfg.json");
  REQUIRE(c.rope_scaling.rope_type == "llama3");
  REQUIRE(c.rope_scaling.factor == 8.0f);
  REQUIRE(c.rope_scaling.original_max_position_embeddings == 64);

  // the written config parses back to the same values
  LlamaConfig back = parse_config(config_to_json(c), "round.json");
  REQUIRE(back.hidden_size == c.hidden_size);
  REQUIRE(back.rope_scaling.factor == c.rope_scaling.factor);
  REQUIRE(back.eos_token_id == c.eos_token_id);

  json q = tiny_config();
  q["architectures"] = {"Qwen2ForCausalLM"};
  q["sliding_window"] = 4096;
  q["use_sliding_window"] = false;
  c = parse_config(q, "qwen.json");
  REQUIRE(c.attention_bias);
  REQUIRE(c.sliding_window == 0);

  json m = tiny_config();
  m["architectures"] = {"MistralForCausalLM"};
  m["sliding_window"] = 4096;
  c = parse_config(m, "mistral.json");
  REQUIRE(c.sliding_window == 4096);
}

TEST_CASE("config.json: unsupported or broken fields are refused by name") {
  auto refuses = [](json j, const std::string& field) {
    REQUIRE_THROWS_WITH(parse_config(j, "bad/config.json"), Contains("bad/config.json") && Contains(field));
  };
  json j = tiny_config();
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  refuses(j, "rope_scaling");
  j = tiny_config();
  j["num_local_experts"] = 8;
  refuses(j, "num_local_experts");
  // sizes no model has, which made the parameter layout allocate without bound (fuzz_config)
  for (const char* field : {"num_hidden_layers", "vocab_size", "hidden_size", "intermediate_size"}) {
    j = tiny_config();
    j[field] = 2000000000;
    refuses(j, field);
  }
  j = tiny_config();
  j["architectures"] = {"GPT2LMHeadModel"};
  refuses(j, "architectures");
  j = tiny_config();
  j.erase("hidden_size");
  refuses(j, "hidden_size");
  j = tiny_config();
  j["num_key_value_heads"] = 3;
  refuses(j, "num_key_value_heads");
  j = tiny_config();
  j["hidden_act"] = "gelu";
  refuses(j, "hidden_act");
  j = tiny_config();
  j["attention_bias"] = true;
  refuses(j, "attention_bias");
  j = tiny_config();
  j["vocab_size"] = "many";
  refuses(j, "vocab_size");

  std::string d = tmpdir("cfg");
  REQUIRE_THROWS_WITH(load_config(d + "/config.json"), Contains(d + "/config.json"));  // missing
  write_bytes(d + "/config.json", "{\"hidden_size\": 12,");
  REQUIRE_THROWS_WITH(load_config(d + "/config.json"), Contains(d + "/config.json") && Contains("invalid JSON"));
  remove_tree(d);
}

TEST_CASE("parameter layout: HF names, fused contiguous blocks, tying") {
  LlamaConfig c = parse_config(tiny_config(), "cfg");
  ParamLayout p = make_param_layout(c);
  const int64_t C = 24, I = 40, V = 50, QD = 24, KVD = 12;
  size_t per_layer = C + QD * C + 2 * KVD * C + C * QD + C + 2 * I * C + C * I;
  REQUIRE(p.total == size_t(V * C) + 2 * per_layer + C + size_t(V * C));
  REQUIRE(p.find("model.layers.1.self_attn.k_proj.weight")->offset == p.layers[1].qkv_w + size_t(QD * C));
  REQUIRE(p.find("model.layers.0.mlp.up_proj.weight")->offset == p.layers[0].gate_up_w + size_t(I * C));
  REQUIRE(p.layers[0].qkv_b == kNoTensor);
  REQUIRE(p.lm_head != p.embed);

  json j = tiny_config();
  j["tie_word_embeddings"] = true;
  j["architectures"] = {"Qwen2ForCausalLM"};
  ParamLayout t = make_param_layout(parse_config(j, "cfg"));
  REQUIRE(t.lm_head == t.embed);
  REQUIRE(t.find("lm_head.weight") == nullptr);
  REQUIRE(t.find("model.layers.0.self_attn.v_proj.bias")->offset == t.layers[0].qkv_b + size_t(QD + KVD));
}

TEST_CASE("weights: init statistics, save and load round trip in F32 and BF16") {
  LlamaConfig c = parse_config(tiny_config(), "cfg");
  ParamLayout p = make_param_layout(c);
  std::vector<float> w(p.total), w2(p.total), again(p.total);
  init_weights(c, p, w.data(), 7);
  init_weights(c, p, again.data(), 7);
  REQUIRE(w == again);
  init_weights(c, p, again.data(), 8);
  REQUIRE(w != again);
  const ParamTensor* emb = p.find("model.embed_tokens.weight");
  double s = 0, s2 = 0;
  for (size_t i = 0; i < emb->numel; i++) s += w[emb->offset + i], s2 += double(w[emb->offset + i]) * w[emb->offset + i];
  double mean = s / emb->numel, sd = std::sqrt(s2 / emb->numel - mean * mean);
  REQUIRE(std::abs(mean) < 0.003);
  REQUIRE(std::abs(sd - 0.02) < 0.002);
  REQUIRE(w[p.layers[1].ln2] == 1.0f);

  std::string d = tmpdir("rt");
  save_weights(d, c, p, w.data(), "F32");
  LlamaConfig c2 = load_config(d + "/config.json");
  load_weights(d, c2, p, w2.data());
  REQUIRE(w == w2);

  save_weights(d, c, p, w.data(), "BF16");
  load_weights(d, c, p, w2.data());
  for (size_t i = 0; i < w.size(); i++) REQUIRE(w2[i] == bf16_to_float(float_to_bf16(w[i])));
  remove_tree(d);
}

TEST_CASE("weights: sharded checkpoints through model.safetensors.index.json") {
  LlamaConfig c = parse_config(tiny_config(), "cfg");
  ParamLayout p = make_param_layout(c);
  std::vector<float> w(p.total), w2(p.total);
  init_weights(c, p, w.data(), 3);
  std::string d = tmpdir("shard");
  std::vector<SafeTensorToWrite> a, b;
  json map;
  for (size_t i = 0; i < p.tensors.size(); i++) {
    const auto& t = p.tensors[i];
    (i % 2 ? a : b).push_back({t.name, "F32", t.shape, w.data() + t.offset});
    map[t.name] = i % 2 ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  write_safetensors(d + "/model-00001-of-00002.safetensors", a);
  write_safetensors(d + "/model-00002-of-00002.safetensors", b);
  write_file_atomic(d + "/model.safetensors.index.json", json{{"metadata", json::object()}, {"weight_map", map}}.dump());
  load_weights(d, c, p, w2.data());
  REQUIRE(w == w2);
  remove_tree(d);
}

TEST_CASE("weights: save_pretrained's split by max_shard_size, the index, and bad shards named by file") {
  LlamaConfig c = parse_config(tiny_config(), "cfg");
  ParamLayout p = make_param_layout(c);
  std::vector<float> w(p.total), w2(p.total);
  init_weights(c, p, w.data(), 5);
  const uint64_t max = 4000;  // the 4800-byte embedding alone; the 3840-byte MLP matrices one each
  for (const std::string dtype : {"F32", "BF16"}) {
    INFO(dtype);
    const uint64_t es = dtype == "BF16" ? 2 : 4;
    const std::vector<WeightFile> files = plan_weight_files(p, dtype, max);
    REQUIRE(files.size() > 4);
    REQUIRE(files.front().name == "model-00001-of-" + std::string(5 - std::to_string(files.size()).size(), '0') +
                                      std::to_string(files.size()) + ".safetensors");
    // Tensors whole and in layout order; a file goes over the maximum only with one tensor, and a
    // file ends only where its next tensor would not fit.
    size_t next = 0;
    for (size_t k = 0; k < files.size(); k++) {
      const WeightFile& f = files[k];
      REQUIRE(f.first == next);
      REQUIRE(f.last > f.first);
      next = f.last;
      REQUIRE(f.begin == p.tensors[f.first].offset);
      REQUIRE(f.end == p.tensors[f.last - 1].offset + p.tensors[f.last - 1].numel);
      REQUIRE(f.bytes == (f.end - f.begin) * es);
      REQUIRE((f.bytes <= max || f.last == f.first + 1));
      if (k + 1 < files.size())
        REQUIRE((f.bytes > max || f.bytes + p.tensors[f.last].numel * es > max));
    }
    REQUIRE(next == p.tensors.size());
    if (dtype == "F32") REQUIRE(files[0].last == 1);  // the embedding, over the maximum, alone

    std::string d = tmpdir("split");
    save_weights(d, c, p, w.data(), dtype, max);
    REQUIRE(!file_exists(d + "/model.safetensors"));
    const json index = json::parse(read_text_file(d + "/model.safetensors.index.json"));
    REQUIRE(index["metadata"]["total_size"] == p.total * es);
    REQUIRE(index["weight_map"].size() == p.tensors.size());
    for (const WeightFile& f : files)
      for (size_t i = f.first; i < f.last; i++) REQUIRE(index["weight_map"][p.tensors[i].name] == f.name);
    load_weights(d, c, p, w2.data());
    for (size_t i = 0; i < w.size(); i++) REQUIRE(w2[i] == (es == 4 ? w[i] : bf16_to_float(float_to_bf16(w[i]))));
    remove_tree(d);
  }
  // Under the maximum (HF's 5GB by default): one model.safetensors and no index.
  REQUIRE(plan_weight_files(p, "F32").size() == 1);
  std::string d = tmpdir("split_bad");
  save_weights(d, c, p, w.data(), "F32", 1 << 20);
  REQUIRE(file_exists(d + "/model.safetensors"));
  REQUIRE(!file_exists(d + "/model.safetensors.index.json"));
  remove_tree(d);

  // Bad shard sets: a missing or truncated file, a weight_map naming a tensor its file lacks.
  save_weights(d, c, p, w.data(), "F32", max);
  const std::vector<WeightFile> files = plan_weight_files(p, "F32", max);
  const std::string second = d + "/" + files[1].name, third = d + "/" + files[2].name;
  const std::string index = read_text_file(d + "/model.safetensors.index.json");
  const std::string bytes = read_text_file(second);
  write_bytes(second, bytes.substr(0, bytes.size() - 4));
  REQUIRE_THROWS_WITH(load_weights(d, c, p, w2.data()), Catch::Contains(second) && Catch::Contains("data_offsets"));
  write_bytes(second, bytes.substr(0, 6));
  REQUIRE_THROWS_WITH(load_weights(d, c, p, w2.data()), Catch::Contains(second) && Catch::Contains("not a safetensors"));
  std::filesystem::remove(second);
  REQUIRE_THROWS_WITH(load_weights(d, c, p, w2.data()), Catch::Contains(second) && Catch::Contains("cannot open"));
  write_bytes(second, bytes);
  json moved = json::parse(index);
  moved["weight_map"][p.tensors[files[1].first].name] = files[2].name;
  write_file_atomic(d + "/model.safetensors.index.json", moved.dump());
  REQUIRE_THROWS_WITH(load_weights(d, c, p, w2.data()),
                      Catch::Contains("'" + p.tensors[files[1].first].name + "' is listed in weight_map but missing from " +
                                      files[2].name));
  json extra = json::parse(index);
  extra["weight_map"]["model.layers.9.mlp.up_proj.weight"] = files[2].name;
  write_file_atomic(d + "/model.safetensors.index.json", extra.dump());
  REQUIRE_THROWS_WITH(load_weights(d, c, p, w2.data()),
                      Catch::Contains("'model.layers.9.mlp.up_proj.weight' is listed in weight_map but missing from"));
  REQUIRE(file_exists(third));
  remove_tree(d);
}

TEST_CASE("safetensors: the piecewise writer makes write_safetensors' bytes; an incomplete file is not kept") {
  std::string d = tmpdir("pieces");
  std::vector<float> x(37);
  for (size_t i = 0; i < x.size(); i++) x[i] = std::sin(float(i)) * 3.0f;
  // F32 [2, 5], an empty tensor, BF16 [3, 9]: 10 + 0 + 27 values.
  const std::vector<SafeTensorToWrite> tensors = {{"a", "F32", {2, 5}, x.data()},
                                                  {"empty", "F32", {0}, x.data()},
                                                  {"b", "BF16", {3, 9}, x.data() + 10}};
  write_safetensors(d + "/whole.safetensors", tensors, {{"format", "pt"}});
  {
    SafeTensorsWriter w(d + "/pieces.safetensors", tensors, {{"format", "pt"}});
    for (size_t a = 0; a < x.size(); a += 7) w.write_f32(x.data() + a, std::min<size_t>(7, x.size() - a));  // across tensors
    REQUIRE_THROWS_WITH(w.write_f32(x.data(), 1), Catch::Contains("more values than the tensors hold"));
    w.commit();
  }
  REQUIRE(read_text_file(d + "/pieces.safetensors") == read_text_file(d + "/whole.safetensors"));
  {
    SafeTensorsWriter w(d + "/short.safetensors", tensors);
    w.write_f32(x.data(), 20);
    REQUIRE_THROWS_WITH(w.commit(), Catch::Contains("short.safetensors") && Catch::Contains("tensor 'b' is incomplete"));
  }
  REQUIRE(std::distance(std::filesystem::directory_iterator(d), std::filesystem::directory_iterator()) == 2);
  remove_tree(d);
}

// Builds a one-tensor safetensors file by hand so that the header can be corrupted at will.
static std::string raw_safetensors(const std::string& header, size_t data_bytes) {
  std::string s(8, '\0');
  uint64_t n = header.size();
  std::memcpy(s.data(), &n, 8);
  return s + header + std::string(data_bytes, '\0');
}

TEST_CASE("safetensors: corrupt headers, bad offsets, missing tensors, shapes, dtypes, non-finite values") {
  std::string d = tmpdir("bad");
  std::string f = d + "/model.safetensors";
  auto expect = [&](const std::string& bytes, const std::string& what) {
    write_bytes(f, bytes);
    REQUIRE_THROWS_WITH(SafeTensors::open(f), Contains(f) && Contains(what));
  };
  std::string hdr = R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";
  // header length past the end of the file
  std::string bytes = raw_safetensors(hdr, 16);
  uint64_t huge = 1 << 20;
  std::memcpy(bytes.data(), &huge, 8);
  expect(bytes, "runs past the end");
  expect("abc", "not a safetensors file");
  expect(raw_safetensors("{\"a\": [", 0), "corrupt header");
  expect(raw_safetensors(R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,32]}})", 16), "out of range");
  expect(raw_safetensors(R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}})", 16), "'a'");
  expect(raw_safetensors(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 16),
         "overlap");
  expect(raw_safetensors(R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", 8), "unknown dtype");
  // dimensions whose product overflows 64 bits (2^78 wraps to 0 bytes, matching empty offsets);
  // found by review, confirmed by fuzz_safetensors (UBSan: signed overflow in numel())
  expect(raw_safetensors(R"({"a":{"dtype":"F32","shape":[549755813888,549755813888],"data_offsets":[0,0]}})", 0),
         "too large");
  write_bytes(f, raw_safetensors(R"({"a":{"dtype":"F32","shape":[0,549755813888,549755813888],"data_offsets":[0,0]}})", 0));
  REQUIRE(SafeTensors::open(f).get("a").numel() == 0);  // a zero dimension: empty, whatever follows

  // a valid model with one tensor removed, one of the wrong shape, one of the wrong dtype, one NaN
  LlamaConfig c = parse_config(tiny_config(), "cfg");
  ParamLayout p = make_param_layout(c);
  std::vector<float> w(p.total);
  init_weights(c, p, w.data(), 1);
  std::vector<int32_t> ints(p.total, 0);
  auto write_model = [&](auto&& edit) {
    std::vector<SafeTensorToWrite> out;
    for (const auto& t : p.tensors) out.push_back({t.name, "F32", t.shape, w.data() + t.offset});
    edit(out);
    write_safetensors(f, out);
  };
  std::vector<float> buf(p.total);
  const std::string victim = "model.layers.1.mlp.down_proj.weight";
  write_model([&](auto& out) { std::erase_if(out, [&](auto& t) { return t.name == victim; }); });
  REQUIRE_THROWS_WITH(load_weights(d, c, p, buf.data()), Contains(f) && Contains(victim) && Contains("missing"));
  write_model([&](auto& out) {
    for (auto& t : out)
      if (t.name == victim) t.shape = {t.shape[1], t.shape[0]};
  });
  REQUIRE_THROWS_WITH(load_weights(d, c, p, buf.data()), Contains(f) && Contains(victim) && Contains("shape"));
  write_model([&](auto& out) {
    for (auto& t : out)
      if (t.name == victim) t.dtype = "I32", t.data = ints.data();
  });
  REQUIRE_THROWS_WITH(load_weights(d, c, p, buf.data()), Contains(f) && Contains(victim) && Contains("dtype"));
  std::vector<float> nan_w = w;
  nan_w[p.find(victim)->offset + 5] = NAN;
  write_model([&](auto& out) {
    for (auto& t : out)
      if (t.name == victim) t.data = nan_w.data() + p.find(victim)->offset;
  });
  REQUIRE_THROWS_WITH(load_weights(d, c, p, buf.data()), Contains(f) && Contains(victim) && Contains("non-finite"));
  remove_tree(d);
}

TEST_CASE("bf16 and f16 conversions") {
  REQUIRE(bf16_to_float(float_to_bf16(1.0f)) == 1.0f);
  REQUIRE(float_to_bf16(1.00390625f) == 0x3f80);  // exactly halfway: ties to even (down)
  REQUIRE(float_to_bf16(1.01171875f) == 0x3f82);  // halfway, odd below: rounds up
  REQUIRE(std::isnan(bf16_to_float(float_to_bf16(NAN))));
  REQUIRE(f16_to_float(0x3c00) == 1.0f);
  REQUIRE(f16_to_float(0xc000) == -2.0f);
  REQUIRE(f16_to_float(0x0001) == std::ldexp(1.0f, -24));  // smallest subnormal
  REQUIRE(std::isinf(f16_to_float(0x7c00)));
}

TEST_CASE("config.json: transformers 5 rope_parameters") {
  json j = tiny_config();
  j.erase("rope_theta");
  j["rope_parameters"] = {{"rope_theta", 1000000.0}, {"rope_type", "default"}};
  LlamaConfig c = parse_config(j, "cfg.json");
  REQUIRE(c.rope_theta == 1000000.0f);
  REQUIRE(c.rope_scaling.rope_type.empty());
  j["rope_parameters"] = {{"rope_theta", 10000.0}, {"rope_type", "llama3"}, {"factor", 8.0},
                          {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                          {"original_max_position_embeddings", 64}};
  c = parse_config(j, "cfg.json");
  REQUIRE(c.rope_theta == 10000.0f);
  REQUIRE(c.rope_scaling.rope_type == "llama3");
  REQUIRE(c.rope_scaling.original_max_position_embeddings == 64);
  j["rope_parameters"]["rope_type"] = "yarn";
  REQUIRE_THROWS_WITH(parse_config(j, "cfg.json"), Contains("rope_parameters.rope_type") && Contains("yarn"));
  j = tiny_config();
  j["layer_types"] = {"full_attention", "sliding_attention"};
  REQUIRE_THROWS_WITH(parse_config(j, "cfg.json"), Contains("layer_types"));
}
