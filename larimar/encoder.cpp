#include "larimar/encoder.h"

#include "common/error.h"
#include "common/file_io.h"
#include "common/json_file.h"

namespace larimar {

EncoderConfig parse_encoder_config(const nlohmann::json& j, const std::string& path) {
  EncoderConfig c;
  c.llama = parse_config(j, path);
  check(j.contains("larimar_code_size"), path, ": missing required field 'larimar_code_size'");
  const nlohmann::json& cz = j["larimar_code_size"];
  check(cz.is_number_integer() && cz.get<int64_t>() > 0 && cz.get<int64_t>() <= (1 << 20), path,
        ": field 'larimar_code_size' must be a positive integer");
  c.code_size = cz.get<int>();
  return c;
}

EncoderConfig load_encoder_config(const std::string& config_json_path) {
  return parse_encoder_config(read_json_file(config_json_path), config_json_path);
}

}  // namespace larimar
