// Answer matching for factoid evaluation. A question may have several gold answers; it is
// correct when the prediction matches any of them.
//   exact    (REMIX default): prediction.strip().lower() == gold.strip().lower()
//   squad    SQuAD v1.1 normalization on both sides (lowercase, drop ASCII punctuation, drop the
//            articles a/an/the, collapse whitespace), then equality
//   contains the stripped, lowercased gold occurs inside the stripped, lowercased prediction
//            (the REMIX rule for WebQA)
// Lowercasing and stripping are ASCII-only (Python's str.lower also folds non-ASCII letters; the
// REMIX data is ASCII).
#pragma once
#include <string>
#include <vector>

enum class MatchKind { exact, squad, contains };

MatchKind parse_match_kind(const std::string& name);  // throws naming the value
const char* match_kind_name(MatchKind k);

std::string strip_lower(const std::string& s);
std::string squad_normalize(const std::string& s);

bool answer_matches(MatchKind kind, const std::string& prediction, const std::string& gold);
bool answer_matches_any(MatchKind kind, const std::string& prediction, const std::vector<std::string>& golds);

// The text a model "answered": generation stops at the first newline, so anything from the first
// '\n' on is dropped (a model that keeps talking after its answer line is judged on the line).
std::string cut_at_newline(const std::string& generated);
