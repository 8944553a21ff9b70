#include "dataloader/dataloader.h"

#include <glob.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "common/error.h"
#include "common/hash.h"
#include "dataloader/rng.h"

// ---------------------------------------------------------------------------------------------
// Specs

std::vector<std::string> expand_shard_list(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    if (item.find_first_of("*?[") == std::string::npos) {
      out.push_back(item);
      continue;
    }
    glob_t g{};
    int rc = glob(item.c_str(), 0, nullptr, &g);
    std::vector<std::string> matches;
    if (rc == 0)
      for (size_t i = 0; i < g.gl_pathc; ++i) matches.push_back(g.gl_pathv[i]);
    globfree(&g);
    check(!matches.empty(), item, ": shard pattern matches no file");
    std::sort(matches.begin(), matches.end());
    out.insert(out.end(), matches.begin(), matches.end());
  }
  check(!out.empty(), "empty shard list '", list, "'");
  return out;
}

MixSpec parse_mix_spec(const std::string& spec) {
  MixSpec m;
  size_t eq = spec.find('=');
  size_t colon = spec.rfind(':');
  check(eq != std::string::npos && eq > 0 && colon != std::string::npos && colon > eq + 1, "--mix '", spec,
        "': expected NAME=SHARDS:RATIO");
  m.name = spec.substr(0, eq);
  std::string ratio = spec.substr(colon + 1);
  char* end = nullptr;
  m.ratio = std::strtod(ratio.c_str(), &end);
  check(!ratio.empty() && end && *end == '\0' && std::isfinite(m.ratio) && m.ratio >= 0, "--mix '", spec,
        "': RATIO '", ratio, "' is not a non-negative number");
  m.shards = expand_shard_list(spec.substr(eq + 1, colon - eq - 1));
  return m;
}

// ---------------------------------------------------------------------------------------------
// Cursor serialization

nlohmann::json DataCursor::to_json() const {
  nlohmann::json j;
  j["epoch"] = epoch;
  j["position"] = position;
  j["step"] = step;
  j["seed"] = std::to_string(seed);  // as a string: JSON numbers lose 64-bit precision in many readers
  j["fingerprint"] = fingerprint;
  j["streams"] = nlohmann::json::array();
  for (auto& s : streams) j["streams"].push_back({{"name", s.name}, {"cycle", s.cycle}, {"offset", s.offset}});
  return j;
}

DataCursor DataCursor::from_json(const nlohmann::json& j, const std::string& where) {
  DataCursor c;
  try {
    check(j.is_object(), where, ": data cursor must be a JSON object");
    c.epoch = j.at("epoch").get<int64_t>();
    c.position = j.at("position").get<int64_t>();
    c.step = j.at("step").get<int64_t>();
    c.seed = std::stoull(j.at("seed").get<std::string>());
    c.fingerprint = j.at("fingerprint").get<std::string>();
    for (auto& s : j.at("streams"))
      c.streams.push_back({s.at("name").get<std::string>(), s.at("cycle").get<int64_t>(), s.at("offset").get<int64_t>()});
  } catch (const nlohmann::json::exception& e) {
    fail(where, ": bad data cursor: ", e.what());
  } catch (const std::logic_error& e) {  // stoull
    fail(where, ": bad data cursor field 'seed': ", e.what());
  }
  check(c.epoch >= 0 && c.position >= 0 && c.step >= 0, where, ": data cursor has negative fields");
  return c;
}

// ---------------------------------------------------------------------------------------------
// Streams

struct DataLoader::Stream {
  std::string name;
  double ratio = 1;
  std::vector<std::unique_ptr<Shard>> shards;
  std::vector<int64_t> shard_begin;  // first stream index of each shard, plus the total
  int64_t size = 0;
  int64_t per_epoch = 0;             // examples per epoch
  std::vector<int32_t> length;       // per example, after truncation to T
  std::vector<int32_t> targets;      // per example, number of target tokens after truncation
  std::vector<uint8_t> truncated;    // per example
  // cycle permutation cache (mixed streams)
  int64_t cycle = -1;
  std::vector<int64_t> perm;

  std::pair<const Shard*, int64_t> locate(int64_t i) const {
    size_t s = size_t(std::upper_bound(shard_begin.begin(), shard_begin.end(), i) - shard_begin.begin()) - 1;
    return {shards[s].get(), i - shard_begin[s]};
  }
  std::string files() const {
    std::string f;
    for (auto& s : shards) f += (f.empty() ? "" : ", ") + s->path();
    return f;
  }
};

DataLoader::~DataLoader() = default;

DataLoader::DataLoader(const DataLoaderConfig& config) : cfg_(config) {
  check(cfg_.T >= 1, "dataloader: T must be positive (got ", cfg_.T, ")");
  check(cfg_.batch_size >= 1, "dataloader: batch size must be positive (got ", cfg_.batch_size, ")");
  check(cfg_.micro_batch_size >= 0, "dataloader: micro batch size must be >= 0");
  check(cfg_.world_size >= 1 && cfg_.rank >= 0 && cfg_.rank < cfg_.world_size, "dataloader: rank ", cfg_.rank,
        " is outside world size ", cfg_.world_size);
  check(!cfg_.primary_shards.empty(), "dataloader: no primary shards given");

  std::vector<std::pair<std::string, std::vector<std::string>>> defs;
  defs.push_back({"primary", cfg_.primary_shards});
  for (auto& m : cfg_.mixes) {
    check(m.name != "primary", "--mix: the name 'primary' is reserved");
    for (auto& d : defs) check(d.first != m.name, "--mix: stream name '", m.name, "' is used twice");
    check(!m.shards.empty(), "--mix ", m.name, ": no shards");
    defs.push_back({m.name, m.shards});
  }

  uint64_t fp = hash_mix64(cfg_.seed);
  std::string hash_ref_path;
  uint64_t hash_ref = 0;
  for (size_t si = 0; si < defs.size(); ++si) {
    auto st = std::make_unique<Stream>();
    st->name = defs[si].first;
    st->ratio = si == 0 ? 1.0 : cfg_.mixes[si - 1].ratio;
    st->shard_begin.push_back(0);
    fp = hash64(st->name, fp);
    fp = hash_mix64(fp ^ uint64_t(std::llround(st->ratio * 1e9)));
    for (auto& path : defs[si].second) {
      auto sh = std::make_unique<Shard>(path);
      // Every shard of every stream must come from the same tokenizer, and match the model's.
      const std::string h = hash_hex(sh->tokenizer_hash());
      if (!cfg_.expected_tokenizer_hash.empty())
        check(h == cfg_.expected_tokenizer_hash, path, ": tokenizer hash ", h, " differs from the model's tokenizer (",
              cfg_.expected_tokenizer_hash, "); re-run prepare_data with the model's tokenizer.json");
      if (hash_ref_path.empty()) {
        hash_ref_path = path;
        hash_ref = sh->tokenizer_hash();
      } else {
        check(sh->tokenizer_hash() == hash_ref, path, ": tokenizer hash ", h, " differs from ", hash_hex(hash_ref),
              " of ", hash_ref_path, " (shards must come from one tokenizer)");
      }
      if (si == 0 && !st->shards.empty() &&
          sh->prompt_template != st->shards[0]->prompt_template && cfg_.log && cfg_.rank == 0)
        std::fprintf(stderr, "dataloader: warning: %s has a different prompt template than %s\n", path.c_str(),
                     st->shards[0]->path().c_str());
      fp = hash_mix64(fp ^ sh->header.payload_checksum) + uint64_t(sh->num_examples());
      st->size += sh->num_examples();
      st->shard_begin.push_back(st->size);
      st->shards.push_back(std::move(sh));
    }
    check(st->size > 0, "dataloader: stream '", st->name, "' is empty (no examples in ", st->files(), ")");

    // Per-example lengths and target counts under T; long examples are an error unless truncating.
    st->length.resize(size_t(st->size));
    st->targets.resize(size_t(st->size));
    st->truncated.resize(size_t(st->size));
    int64_t n_trunc = 0;
    for (int64_t i = 0; i < st->size; ++i) {
      auto [sh, j] = st->locate(i);
      int64_t len = sh->example_length(j);
      if (len > cfg_.T) {
        check(cfg_.truncate, sh->path(), ": example ", j, " has ", len, " tokens, more than T = ", cfg_.T,
              " (use --truncate to cut long examples)");
        st->truncated[size_t(i)] = 1;
        ++n_trunc;
        len = cfg_.T;
      }
      // targets: tokens 1..len-1 with their loss bit (token 0 has nothing before it to predict it)
      const int64_t b = sh->example_begin(j);
      int32_t n = 0;
      for (int64_t t = 1; t < len; ++t) n += sh->loss(b + t);
      st->length[size_t(i)] = int32_t(len);
      st->targets[size_t(i)] = n;
    }
    if (si == 0) {
      st->per_epoch = st->size;
    } else {
      st->per_epoch = std::llround(st->ratio * double(streams_[0]->size));
    }
    if (cfg_.log && cfg_.rank == 0) {
      std::fprintf(stderr, "dataloader: stream %s: %lld examples in %zu shard(s), %lld per epoch", st->name.c_str(),
                   (long long)st->size, st->shards.size(), (long long)st->per_epoch);
      if (si > 0) std::fprintf(stderr, " (ratio %g)", st->ratio);
      if (n_trunc) std::fprintf(stderr, ", %lld longer than T=%d will be truncated", (long long)n_trunc, cfg_.T);
      std::fprintf(stderr, "\n");
    }
    streams_.push_back(std::move(st));
  }
  fingerprint_ = hash_hex(fp);
  cursor_.seed = cfg_.seed;
  cursor_.fingerprint = fingerprint_;
  fill_stream_states(cursor_);
  if (cfg_.log && cfg_.rank == 0)
    std::fprintf(stderr, "dataloader: epoch = %lld examples, %lld steps of B=%d, T=%d, pack=%d, ranks=%d\n",
                 (long long)epoch_size(), (long long)steps_per_epoch(), cfg_.batch_size, cfg_.T, int(cfg_.pack),
                 cfg_.world_size);
}

int64_t DataLoader::epoch_size() const {
  int64_t n = 0;
  for (auto& s : streams_) n += s->per_epoch;
  return n;
}
int64_t DataLoader::steps_per_epoch() const { return (epoch_size() + cfg_.batch_size - 1) / cfg_.batch_size; }
const std::string& DataLoader::prompt_template() const { return streams_[0]->shards[0]->prompt_template; }
std::string DataLoader::tokenizer_hash_hex() const { return hash_hex(streams_[0]->shards[0]->tokenizer_hash()); }
int DataLoader::num_streams() const { return int(streams_.size()); }
int64_t DataLoader::stream_size(int s) const { return streams_.at(size_t(s))->size; }
int64_t DataLoader::stream_per_epoch(int s) const { return streams_.at(size_t(s))->per_epoch; }
const std::string& DataLoader::stream_name(int s) const { return streams_.at(size_t(s))->name; }

std::vector<int32_t> DataLoader::example_tokens(ExampleRef e) const {
  auto [sh, j] = streams_.at(size_t(e.stream))->locate(e.index);
  return sh->example_tokens(j);
}
std::vector<uint8_t> DataLoader::example_loss(ExampleRef e) const {
  auto [sh, j] = streams_.at(size_t(e.stream))->locate(e.index);
  return sh->example_loss(j);
}

// ---------------------------------------------------------------------------------------------
// Mixed-stream draws: draw g of stream s is perm_{g / n}[g % n], where perm_c is cycle c's
// permutation of the stream.

void DataLoader::advance_cycle(Stream& s) {
  const int64_t n = s.size, k = s.per_epoch, c = s.cycle + 1;
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[size_t(i)] = i;
  Rng rng = Rng::derive(cfg_.seed, hash64(s.name) ^ 0x6379636c65ULL /* "cycle" */, uint64_t(c));
  shuffle_in_place(p, rng);
  if (c >= 1 && k <= n && k > 0) {
    // The epoch containing draw c*n started at draw ep_start; the draws [ep_start, c*n) came from
    // the end of the previous cycle. Move those examples to the end of this cycle so that the
    // rest of the epoch (at most n - (c*n - ep_start) draws, since k <= n) does not repeat them.
    const int64_t ep_start = (c * n) / k * k;
    if (ep_start < c * n) {
      std::vector<uint8_t> drawn(size_t(n), 0);
      for (int64_t i = ep_start - (c - 1) * n; i < n; ++i) drawn[size_t(s.perm[size_t(i)])] = 1;
      std::stable_partition(p.begin(), p.end(), [&](int64_t x) { return !drawn[size_t(x)]; });
    }
  }
  s.perm = std::move(p);
  s.cycle = c;
}

int64_t DataLoader::draw(Stream& s, int64_t g) {
  const int64_t c = g / s.size;
  if (s.cycle > c) s.cycle = -1;  // going back (restore): recompute from the first cycle
  while (s.cycle < c) advance_cycle(s);
  return s.perm[size_t(g % s.size)];
}

void DataLoader::build_order(int64_t epoch, std::vector<ExampleRef>& out) {
  out.clear();
  out.reserve(size_t(epoch_size()));
  for (int64_t i = 0; i < streams_[0]->size; ++i) out.push_back({0, i});
  for (size_t si = 1; si < streams_.size(); ++si) {
    Stream& s = *streams_[si];
    for (int64_t j = 0; j < s.per_epoch; ++j) out.push_back({int32_t(si), draw(s, epoch * s.per_epoch + j)});
  }
  Rng rng = Rng::derive(cfg_.seed + uint64_t(epoch), 0x65706f6368ULL /* "epoch" */);
  shuffle_in_place(out, rng);
}

std::vector<ExampleRef> DataLoader::epoch_order(int64_t epoch) {
  std::vector<ExampleRef> o;
  build_order(epoch, o);
  return o;
}

void DataLoader::fill_stream_states(DataCursor& c) const {
  c.streams.clear();
  for (size_t si = 1; si < streams_.size(); ++si) {
    const Stream& s = *streams_[si];
    const int64_t g = c.epoch * s.per_epoch;
    c.streams.push_back({s.name, g / s.size, g % s.size});
  }
}

void DataLoader::restore(const DataCursor& c) {
  check(c.seed == cfg_.seed, "data cursor: seed ", c.seed, " differs from the configured seed ", cfg_.seed);
  check(c.fingerprint == fingerprint_, "data cursor: fingerprint ", c.fingerprint,
        " differs from this data (", fingerprint_, "): the shards, mix names or ratios changed since the checkpoint");
  check(c.position <= epoch_size(), "data cursor: position ", c.position, " beyond the epoch size ", epoch_size());
  // Every epoch takes at least one step. Restoring replays the mixed streams' cycles up to the
  // cursor (time proportional to epoch x mixed examples per epoch), so the epoch is capped far
  // above real runs: a corrupt cursor is refused instead of replaying for hours.
  check(c.epoch <= c.step, "data cursor: epoch ", c.epoch, " is beyond its step count ", c.step);
  check(c.epoch <= kMaxCursorEpoch, "data cursor: epoch ", c.epoch, " is beyond the ", kMaxCursorEpoch,
        " epochs a run can resume from");
  DataCursor expect = c;
  fill_stream_states(expect);
  check(expect.streams.size() == c.streams.size(), "data cursor: has ", c.streams.size(), " mixed streams, expected ",
        expect.streams.size());
  for (size_t i = 0; i < c.streams.size(); ++i)
    check(c.streams[i].name == expect.streams[i].name && c.streams[i].cycle == expect.streams[i].cycle &&
              c.streams[i].offset == expect.streams[i].offset,
          "data cursor: stream '", c.streams[i].name, "' state (cycle ", c.streams[i].cycle, ", offset ",
          c.streams[i].offset, ") is inconsistent with epoch ", c.epoch);
  cursor_ = c;
  if (cursor_.position == epoch_size()) {  // normalize an end-of-epoch cursor
    cursor_.epoch++;
    cursor_.position = 0;
    fill_stream_states(cursor_);
  }
  order_epoch_ = -1;
}

// ---------------------------------------------------------------------------------------------
// Batching

Batch pack_examples(const std::vector<ExampleSpan>& ex, int T, bool pack) {
  // Assign (row, column) to each example.
  std::vector<int> row_of(ex.size()), col_of(ex.size());
  std::vector<int> fill;  // tokens used per row
  for (size_t i = 0; i < ex.size(); ++i) {
    const int len = int(ex[i].length);
    check(len >= 1 && len <= T, "pack_examples: example of length ", len, " does not fit T = ", T);
    int r = -1;
    if (pack)
      for (size_t j = 0; j < fill.size(); ++j)
        if (fill[j] + len <= T) { r = int(j); break; }
    if (r < 0) { r = int(fill.size()); fill.push_back(0); }
    row_of[i] = r;
    col_of[i] = fill[size_t(r)];
    fill[size_t(r)] += len;
  }
  Batch b;
  b.rows = int(fill.size());
  b.T = T;
  const size_t n = size_t(b.rows) * size_t(T);
  b.tokens.assign(n, 0);
  b.targets.assign(n, -1);
  b.positions.assign(n, 0);
  b.seg_start.resize(n);
  for (size_t i = 0; i < n; ++i) b.seg_start[i] = int32_t(i % size_t(T));  // padding: own column
  b.num_examples = int(ex.size());
  for (size_t i = 0; i < ex.size(); ++i) {
    const int64_t len = ex[i].length;
    const size_t base = size_t(row_of[i]) * size_t(T) + size_t(col_of[i]);
    for (int64_t t = 0; t < len; ++t) {
      b.tokens[base + t] = ex[i].tokens[t];
      b.positions[base + t] = int32_t(t);
      b.seg_start[base + t] = col_of[i];
      if (t + 1 < len && ex[i].loss[t + 1]) {
        b.targets[base + t] = ex[i].tokens[t + 1];
        b.num_target_tokens++;
      }
    }
  }
  return b;
}

bool DataLoader::next(OptimizerBatch& out) {
  const int64_t N = epoch_size();
  if (cfg_.num_epochs > 0 && cursor_.epoch >= cfg_.num_epochs) return false;
  if (order_epoch_ != cursor_.epoch) {
    build_order(cursor_.epoch, order_);
    order_epoch_ = cursor_.epoch;
  }
  const int64_t begin = cursor_.position;
  const int64_t b = std::min<int64_t>(cfg_.batch_size, N - begin);
  const int64_t R = cfg_.world_size, r = cfg_.rank;
  const int64_t my_begin = begin + b * r / R, my_end = begin + b * (r + 1) / R;

  out = OptimizerBatch{};
  out.epoch = cursor_.epoch;
  out.step_in_epoch = begin / cfg_.batch_size;
  out.last_in_epoch = begin + b == N;
  out.global_num_examples = int(b);
  for (int64_t i = begin; i < begin + b; ++i)
    out.global_num_target_tokens += streams_[size_t(order_[size_t(i)].stream)]->targets[size_t(order_[size_t(i)].index)];

  const int64_t mine = my_end - my_begin;
  const int64_t mb = cfg_.micro_batch_size > 0 ? cfg_.micro_batch_size : std::max<int64_t>(mine, 1);
  std::vector<int32_t> tok_buf;
  std::vector<uint8_t> loss_buf;
  for (int64_t m0 = my_begin; m0 < my_end; m0 += mb) {
    const int64_t m1 = std::min(my_end, m0 + mb);
    // Gather this micro-batch's examples (truncated to T) into one buffer, then lay them out.
    int64_t total = 0;
    for (int64_t i = m0; i < m1; ++i) total += streams_[size_t(order_[size_t(i)].stream)]->length[size_t(order_[size_t(i)].index)];
    tok_buf.resize(size_t(total));
    loss_buf.resize(size_t(total));
    std::vector<ExampleSpan> spans;
    int64_t off = 0;
    for (int64_t i = m0; i < m1; ++i) {
      const ExampleRef e = order_[size_t(i)];
      const Stream& s = *streams_[size_t(e.stream)];
      auto [sh, j] = s.locate(e.index);
      const int64_t len = sh->read_example(j, tok_buf.data() + off, loss_buf.data() + off, cfg_.T);
      if (s.truncated[size_t(e.index)]) ++truncated_drawn_;
      spans.push_back({tok_buf.data() + off, loss_buf.data() + off, len});
      off += len;
      out.examples.push_back(e);
    }
    Batch mbatch = pack_examples(spans, cfg_.T, cfg_.pack);
    out.num_target_tokens += mbatch.num_target_tokens;
    out.num_examples += mbatch.num_examples;
    out.micro.push_back(std::move(mbatch));
  }

  cursor_.position = begin + b;
  cursor_.step++;
  if (cursor_.position >= N) {
    cursor_.epoch++;
    cursor_.position = 0;
    fill_stream_states(cursor_);
    if (cfg_.log && cfg_.rank == 0 && truncated_drawn_ > 0)
      std::fprintf(stderr, "dataloader: %lld truncated examples returned so far\n", (long long)truncated_drawn_);
  }
  return true;
}
