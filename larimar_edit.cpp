// larimar_edit: edit a Larimar memory file from the command line (docs/larimar.md).
//   write   encode the facts of a JSONL file (one episode) and write them into a memory file,
//           creating it from the memory prior when it does not exist yet;
//   forget  encode the facts again and remove them (the exact least-squares solution without them);
//   read    encode queries and print their readouts (JSONL), with ‖z_r − z‖/‖z‖, which is ~0 for
//           a stored fact and not for one the memory does not hold.
// The encoder is a directory (larimar/encoder.h) that also holds tokenizer.json; its identity, an
// XXH3-64 of its config.json and model.safetensors, is recorded in the memory file, and a file
// written through another encoder is refused.
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/cli.h"
#include "common/error.h"
#include "common/file_io.h"
#include "dataloader/sources.h"
#include "larimar/memory_file.h"
#include "larimar/readout.h"
#include "model/safetensors.h"

using namespace larimar;

namespace {

struct Args {
  std::string encoder, params, facts, memory, field = "text", output;
  double c0 = 1e-6;
  int batch = 32;
};

// The texts of a JSONL file: field `field` (a string) of every non-blank line.
std::vector<std::string> read_texts(const std::string& path, const std::string& field) {
  const std::string data = read_text_file(path);
  std::vector<std::string> texts;
  for (const TextLine& line : nonblank_lines(data)) {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line.text);
    } catch (const nlohmann::json::exception&) {
      fail(path, ":", line.number, ": not a JSON object");
    }
    check(j.is_object() && j.contains(field) && j[field].is_string(), path, ":", line.number, ": field '", field,
          "' is missing or not a string");
    texts.push_back(j[field].get<std::string>());
  }
  check(!texts.empty(), path, ": no facts");
  return texts;
}

// Codes [texts, Cz] of the texts through the encoder directory.
Mat encode_all(const Args& a, const std::vector<std::string>& texts) {
  int Cz = 0;
  const std::vector<float> z = encode_texts(a.encoder, texts, a.batch, a.facts, &Cz);
  Mat Z((int64_t)texts.size(), Cz);
  for (size_t i = 0; i < z.size(); i++) Z.data()[i] = z[i];
  return Z;
}

int cmd_write(const Args& a, bool forget) {
  const std::string id = encoder_identity(a.encoder);
  const Mat Z = encode_all(a, read_texts(a.facts, a.field));
  SequentialMemory mem = [&] {
    if (forget || file_exists(a.memory)) return load_memory(a.memory, id);
    check(!a.params.empty(), "--params: needed to create a new memory (", a.memory, " does not exist)");
    const SafeTensors st = SafeTensors::open(a.params);
    const SafeTensorInfo& info = st.get("larimar.M0");
    check(info.shape.size() == 2, a.params, ": tensor 'larimar.M0' must be [K, Cz]");
    const std::vector<float> m0 = st.read_f32("larimar.M0");
    Mat M0(info.shape[0], info.shape[1]);
    for (size_t i = 0; i < m0.size(); i++) M0.data()[i] = m0[i];
    // The prior also serves as the fixed reference memory of the keys.
    return SequentialMemory(M0, a.c0, M0, PinvConfig{});
  }();
  check(Z.cols() == mem.code_size(), a.memory, ": codes of size ", mem.code_size(), ", the encoder makes ", Z.cols());
  if (forget) mem.forget(Z);
  else mem.write(Z);
  save_memory(a.memory, mem, id);
  std::printf("%s %lld facts: memory %lld x %lld holds %lld rows\n", forget ? "forgot" : "wrote", (long long)Z.rows(),
              (long long)mem.slots(), (long long)mem.code_size(), (long long)mem.rows());
  return 0;
}

int cmd_read(const Args& a) {
  const SequentialMemory mem = load_memory(a.memory, encoder_identity(a.encoder));
  const std::vector<std::string> texts = read_texts(a.facts, a.field);
  const Mat Z = encode_all(a, texts);
  check(Z.cols() == mem.code_size(), a.memory, ": codes of size ", mem.code_size(), ", the encoder makes ", Z.cols());
  const Read r = read(mem.memory(), Z, PinvConfig{});
  std::string out;
  for (int64_t i = 0; i < Z.rows(); i++) {
    nlohmann::json j;
    j["text"] = texts[i];
    j["relative_error"] = (r.Zr.row(i) - Z.row(i)).norm() / std::max(Z.row(i).norm(), 1e-300);
    j["readout"] = std::vector<double>(r.Zr.row(i).data(), r.Zr.row(i).data() + Z.cols());
    out += j.dump() + "\n";
  }
  if (a.output.empty()) std::fputs(out.c_str(), stdout);
  else write_file_atomic(a.output, out);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Args a;
    CLI::App app;
    cli::init(app, "usage: larimar_edit COMMAND [options]   (larimar_edit COMMAND --help: the command's options)");
    app.description("Writes facts into a Larimar memory file, forgets them, and reads it.");
    auto common = [&](CLI::App* cmd) {
      cmd->add_option("--encoder", a.encoder, "encoder directory: config.json, model.safetensors, tokenizer.json")
          ->option_text("DIR")
          ->required();
      cmd->add_option("--memory", a.memory, "the memory file")->option_text("FILE")->required();
      cmd->add_option("--facts", a.facts, "JSONL, one fact per line")->option_text("FILE")->required();
      cmd->add_option("--field", a.field, "the JSON field holding a fact's text (default text)")->option_text("NAME");
      cmd->add_option("--batch", a.batch, "texts encoded together (default 32)")
          ->option_text("N")
          ->check(cli::integer(1, 4096));
    };
    CLI::App* write = cli::subcommand(app, "write", "write the facts (one episode) into the memory, creating it from the prior",
                                      "usage: larimar_edit write --encoder DIR --memory FILE --facts FILE [--params FILE] [options]");
    common(write);
    write->add_option("--params", a.params, "safetensors with larimar.M0 [K, Cz], the prior (and reference) memory")
        ->option_text("FILE");
    write->add_option("--c0", a.c0, "prior precision c0 of a new memory (default 1e-6)")
        ->option_text("X")
        ->check(cli::number(0, 1e12));
    CLI::App* forget = cli::subcommand(app, "forget", "remove facts written before (least squares without them)",
                                       "usage: larimar_edit forget --encoder DIR --memory FILE --facts FILE [options]");
    common(forget);
    CLI::App* rd = cli::subcommand(app, "read", "print each query's readout as JSONL (text, relative_error, readout)",
                                   "usage: larimar_edit read --encoder DIR --memory FILE --facts FILE [--output FILE]");
    common(rd);
    rd->add_option("--output", a.output, "write the JSONL here instead of stdout")->option_text("FILE");
    if (int rc = cli::parse_or_usage(app, argc, argv); rc >= 0) return rc;
    const std::vector<CLI::App*> chosen = app.get_subcommands();
    check(!chosen.empty(), "give a command: write, forget or read (see --help)");
    const std::string command = chosen.front()->get_name();
    if (command == "read") return cmd_read(a);
    return cmd_write(a, command == "forget");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
