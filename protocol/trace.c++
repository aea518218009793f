#include "protocol/trace.h"

#include <algorithm>
#include <cctype>

#include "params.h"

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

// Where the word after `at` (and its leading blanks) ends.
std::size_t after_word(std::string_view text, std::size_t at) {
  while (at < text.size() && is_blank(text[at])) ++at;
  while (at < text.size() && !is_blank(text[at])) ++at;
  return at;
}

bool printable_ascii(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) { return (c >= ' ' && c < 127) || c == '\t'; });
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
  // What may show: none of a line that is not a command of popd's (it
  // may be a SASL response pipelined after an AUTH that failed, or a
  // password after a blank); of a command, its verb, and where the line is
  // clean (printable ASCII, not too long for the engine: a control byte
  // may join a password to a word) the words that are no secret.
  bool command = shown_whole(verb) || verb == "PASS" || verb == "APOP" || verb == "AUTH";
  bool clean = printable_ascii(text) && line.size() <= params::max_command_line;
  std::size_t keep = command ? verb_end : 0;
  if (command && clean && verb != "PASS") {
    bool one_word = verb == "USER" || verb == "APOP" || verb == "AUTH";  // the name, the mechanism
    keep = one_word ? after_word(text, verb_end) : text.size();
    bool more = text.find_first_not_of(" \t", keep) != std::string_view::npos;
    if (!more) keep = text.size();
    // USER takes one word: a second may be the password typed after it.
    if (verb == "USER" && more) keep = verb_end;
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
