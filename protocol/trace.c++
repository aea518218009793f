#include "protocol/trace.h"

#include <algorithm>
#include <cctype>

namespace popd::protocol {
namespace {

bool equal_ignoring_case(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::toupper(static_cast<unsigned char>(x)) == std::toupper(static_cast<unsigned char>(y));
         });
}

bool is_blank(char c) { return c == ' ' || c == '\t'; }

// Where the `words`th word of `text` ends (after its leading blanks).
std::size_t after_words(std::string_view text, int words) {
  std::size_t at = 0;
  for (int i = 0; i < words; ++i) {
    while (at < text.size() && is_blank(text[at])) ++at;
    while (at < text.size() && !is_blank(text[at])) ++at;
  }
  return at;
}

}  // namespace

std::string redacted(std::string_view line, bool sasl_response) {
  std::size_t content = line.find_first_of("\r\n");
  std::string_view end = content == std::string_view::npos ? "" : line.substr(content);
  std::string_view text = line.substr(0, content);
  if (sasl_response) return std::string(text == "*" ? "*" : "***").append(end);
  std::string_view verb = text.substr(0, after_words(text, 1));
  // The words that stay: PASS's none, APOP's name, AUTH's mechanism.
  int kept = equal_ignoring_case(verb, "PASS") ? 0
             : equal_ignoring_case(verb, "APOP") || equal_ignoring_case(verb, "AUTH") ? 1
                                                                                       : -1;
  if (kept < 0) return std::string(line);
  std::size_t keep = after_words(text, 1 + kept);
  std::string shown(text.substr(0, keep));
  if (text.find_first_not_of(" \t", keep) != std::string_view::npos) shown += " ***";
  return shown.append(end);
}

void TracedOutput::write(std::string_view bytes) {
  trace_.server(bytes);
  next_.write(bytes);
}

std::span<char> TracedOutput::room(std::size_t at_least) {
  lent_ = next_.room(at_least);
  return lent_;
}

void TracedOutput::commit(std::size_t size) {
  trace_.server({lent_.data(), std::min(size, lent_.size())});
  next_.commit(size);
}

}  // namespace popd::protocol
