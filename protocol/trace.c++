#include "protocol/trace.h"

#include <algorithm>
#include <cctype>

namespace popd::protocol {
namespace {

std::string upper(std::string_view word) {
  std::string result(word);
  for (char& c : result) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return result;
}

bool is_blank(char c) { return c == ' ' || c == '\t'; }

// The commands whose words are all shown: those popd answers, and LAST,
// which old clients still send.
bool shown_whole(std::string_view verb) {
  for (std::string_view command : {"USER", "CAPA", "STLS", "QUIT", "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET",
                                   "TOP", "UIDL", "LAST"})
    if (verb == command) return true;
  return false;
}

}  // namespace

// The line as the engine reads it: its end is the last "\n" or "\r\n"
// alone, and its verb runs to the first blank (engine.c++ dispatch).
std::string redacted(std::string_view line, bool sasl_response) {
  std::size_t end_size = line.ends_with("\r\n") ? 2 : line.ends_with('\n') ? 1 : 0;
  std::string_view end = line.substr(line.size() - end_size);
  std::string_view text = line.substr(0, line.size() - end_size);
  if (sasl_response) return std::string(text == "*" ? "*" : "***").append(end);
  std::size_t verb_end = 0;
  while (verb_end < text.size() && !is_blank(text[verb_end])) ++verb_end;
  std::string verb = upper(text.substr(0, verb_end));
  // A control byte inside (a lone CR) may join another command's words.
  bool plain = std::none_of(text.begin(), text.end(), [](char c) { return (c >= 0 && c < ' ' && c != '\t') || c == 127; });
  if (shown_whole(verb) && plain) return std::string(line);
  // Anything else may be a secret: SASL responses a client pipelined
  // after an AUTH that failed, a password sent with a blank before PASS.
  std::size_t keep = shown_whole(verb) ? verb_end : 0;
  if (verb == "PASS") {
    keep = verb_end;
  } else if (verb == "APOP" || verb == "AUTH") {  // the name, the mechanism
    keep = verb_end;
    while (keep < text.size() && is_blank(text[keep])) ++keep;
    while (keep < text.size() && !is_blank(text[keep])) ++keep;
  }
  std::string shown(text.substr(0, keep));
  if (keep < text.size()) shown += keep > 0 ? " ***" : "***";
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
