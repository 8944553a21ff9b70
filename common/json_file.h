// JSON documents (nlohmann::json) whose errors name their file.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

// `text` parsed as JSON; a syntax error is "<name>: invalid JSON: <the parser's message>".
nlohmann::json parse_json(const std::string& text, const std::string& name);
// The JSON document in the file at `path` (unreadable or invalid: an error naming the path).
nlohmann::json read_json_file(const std::string& path);
