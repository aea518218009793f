#include "mailbox/maildir/message.h"

#include <unistd.h>

#include <cerrno>
#include <memory>
#include <string>
#include <string_view>

#include "params.h"

namespace popd::mailbox::maildir {
namespace {

// Calls f(block) for each block of the file, front to back; false when a
// read fails, or when f returns false (then stops, and is not a failure).
template <typename F>
bool each_block(int fd, F&& f) {
  auto buffer = std::make_unique_for_overwrite<char[]>(params::read_block);
  for (std::uint64_t offset = 0;;) {
    ssize_t n = ::pread(fd, buffer.get(), params::read_block, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (n == 0) return true;
    if (!f(std::string_view(buffer.get(), static_cast<std::size_t>(n)))) return true;
    offset += static_cast<std::uint64_t>(n);
  }
}

std::string_view without_cr(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  return line;
}

// Hands whole lines to a sink: the header and, for TOP, the body's first
// lines one by one; RETR's body in blocks of whole lines.
class LineSender {
 public:
  LineSender(std::optional<std::uint64_t> body_lines, protocol::MessageSink& sink)
      : body_lines_(body_lines), left_(body_lines.value_or(0)), sink_(sink) {}

  // false: TOP has sent all it asked for.
  bool block(std::string_view data) {
    while (!data.empty()) {
      auto newline = data.find('\n');
      if (newline == std::string_view::npos) {
        partial_ += data;
        return true;
      }
      if (partial_.empty() && !in_header_ && !body_lines_) {  // RETR's body: all whole lines at once
        auto last = data.rfind('\n');
        sink_.lines(data.substr(0, last + 1));
        data.remove_prefix(last + 1);
        continue;
      }
      bool go_on;
      if (partial_.empty()) {
        go_on = line(without_cr(data.substr(0, newline)));
      } else {
        partial_ += data.substr(0, newline);
        go_on = line(without_cr(partial_));
        partial_.clear();
      }
      if (!go_on) return false;
      data.remove_prefix(newline + 1);
    }
    return true;
  }

  void end() {
    if (!partial_.empty()) line(without_cr(partial_));  // the last line has no LF: it gets a CRLF too
  }

 private:
  bool line(std::string_view text) {
    if (in_header_ && text.empty()) {
      in_header_ = false;
      sink_.end_line();
      return !(body_lines_ && left_ == 0);
    }
    if (!in_header_ && body_lines_) {
      if (left_ == 0) return false;
      --left_;
    }
    sink_.text(text);
    sink_.end_line();
    return in_header_ || !body_lines_ || left_ > 0;
  }

  std::optional<std::uint64_t> body_lines_;
  std::uint64_t left_;
  protocol::MessageSink& sink_;
  bool in_header_ = true;
  std::string partial_;  // a line that continues in the next block
};

}  // namespace

std::optional<std::uint64_t> wire_size(int fd) {
  std::uint64_t size = 0;
  bool after_cr = false;  // the last byte of the block before was CR
  bool ok = each_block(fd, [&](std::string_view block) {
    size += block.size();
    for (std::size_t at = block.find('\n'); at != std::string_view::npos; at = block.find('\n', at + 1)) {
      bool crlf = at > 0 ? block[at - 1] == '\r' : after_cr;
      if (!crlf) ++size;  // LF becomes CRLF
    }
    after_cr = block.back() == '\r';
    return true;
  });
  if (!ok) return std::nullopt;
  return size;
}

bool send_message(int fd, std::optional<std::uint64_t> body_lines, protocol::MessageSink& sink) {
  LineSender sender(body_lines, sink);
  bool finished = false;
  bool ok = each_block(fd, [&](std::string_view block) {
    if (sender.block(block)) return true;
    finished = true;
    return false;
  });
  if (ok && !finished) sender.end();
  return ok;
}

}  // namespace popd::mailbox::maildir
