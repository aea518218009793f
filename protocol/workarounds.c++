#include "protocol/workarounds.h"

#include <algorithm>

namespace popd::protocol {

void WorkaroundSink::text(std::string_view part) {
  line_has_text_ = line_has_text_ || !part.empty();
  next_.text(without_nuls(part));
}

void WorkaroundSink::end_line() {
  in_header_ = in_header_ && line_has_text_;
  line_has_text_ = false;
  next_.end_line();
}

void WorkaroundSink::lines(std::string_view block) {
  // Only the header's lines are looked at one by one, for its end.
  for (std::size_t at = 0; in_header_ && at < block.size();) {
    in_header_ = block[at] != '\n' && block.substr(at, 2) != "\r\n";
    std::size_t newline = block.find('\n', at);
    if (newline == std::string_view::npos) break;
    at = newline + 1;
  }
  next_.lines(without_nuls(block));
}

// oe-ns-eoh: the header's end, if the message had none.
void WorkaroundSink::finish() {
  if (end_of_header_ && in_header_) next_.end_line();
}

// outlook-no-nuls: Outlook ends a message at a NUL; 0x80 as Dovecot sends.
std::string_view WorkaroundSink::without_nuls(std::string_view bytes) {
  if (!no_nuls_ || bytes.find('\0') == std::string_view::npos) return bytes;
  scratch_.assign(bytes);
  std::replace(scratch_.begin(), scratch_.end(), '\0', '\x80');
  return scratch_;
}

}  // namespace popd::protocol
