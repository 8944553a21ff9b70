// Answer matching for factoid evaluation. A question may have several gold answers; it is
// correct when the prediction matches any of them.
//   exact    (REMIX default): prediction.strip().lower() == gold.strip().lower()
//   squad    SQuAD v1.1 normalization on both sides (lowercase, drop ASCII punctuation, drop the
//            articles a/an/the, collapse whitespace), then equality
//   contains the stripped, lowercased gold occurs inside the stripped, lowercased prediction
//            (the REMIX rule for WebQA)
//   gsm8k    GSM8K final-answer exact match: the number after the last "####" of the gold
//            (the reference solution) equals the final number of the prediction: the number after
//            its last "####" when it writes one, else its last number. Numbers are compared after
//            normalization (thousands commas dropped, "+" and leading zeros dropped, trailing
//            fractional zeros dropped: "1,000" = "1000", "3.50" = "3.5", "-0" = "0"). The
//            prediction is the whole generated text (not cut at a newline: solutions span lines).
// Lowercasing and stripping are ASCII-only (Python's str.lower also folds non-ASCII letters; the
// REMIX data is ASCII).
#pragma once
#include <string>
#include <vector>

enum class MatchKind { exact, squad, contains, gsm8k };

MatchKind parse_match_kind(const std::string& name);  // throws naming the value
const char* match_kind_name(MatchKind k);

std::string strip_lower(const std::string& s);
std::string squad_normalize(const std::string& s);

// GSM8K helpers: the normalized numbers (see gsm8k above); "" when there is none.
std::string normalize_number(const std::string& number);
std::string gsm8k_reference_answer(const std::string& solution);  // after the last "####"
std::string gsm8k_predicted_answer(const std::string& generated);
// Whether a match kind judges only the first line of the generation (all but gsm8k), so that
// generation may stop at a newline.
bool match_uses_first_line(MatchKind k);

bool answer_matches(MatchKind kind, const std::string& prediction, const std::string& gold);
bool answer_matches_any(MatchKind kind, const std::string& prediction, const std::vector<std::string>& golds);

// The text a model "answered": generation stops at the first newline, so anything from the first
// '\n' on is dropped (a model that keeps talking after its answer line is judged on the line).
std::string cut_at_newline(const std::string& generated);
