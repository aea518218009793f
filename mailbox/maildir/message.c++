#include "mailbox/maildir/message.h"

#include <unistd.h>

#include <cerrno>
#include <memory>
#include <string>
#include <string_view>

#include "params.h"

namespace popd::mailbox::maildir {
namespace {

// One buffer for a thread's reads of messages: one allocated per message
// would be mapped and unmapped every time (glibc maps an allocation of
// 1 MiB), page faults and all, for each of 100,000 RETRs.
char* read_buffer() {
  thread_local std::unique_ptr<char[]> buffer = std::make_unique_for_overwrite<char[]>(params::read_block);
  return buffer.get();
}

// Calls f(block) for each block of the file, front to back, `size` bytes
// (at most params::read_block) at a time; false when a read fails, or when
// f returns false (then stops, and is not a failure).
template <typename F>
bool each_block(int fd, std::size_t size, F&& f) {
  char* buffer = read_buffer();
  for (std::uint64_t offset = 0;;) {
    ssize_t n = ::pread(fd, buffer, size, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (n == 0) return true;
    if (!f(std::string_view(buffer, static_cast<std::size_t>(n)))) return true;
    offset += static_cast<std::uint64_t>(n);
  }
}

// Hands a file's lines to a sink as they come, a line longer than a block
// in pieces (nothing holds a whole line): the header and, for TOP, the
// body's first lines; RETR's body in blocks of whole lines. A CR before an
// LF is the line end; a CR elsewhere is sent.
class LineSender {
 public:
  LineSender(std::optional<std::uint64_t> body_lines, protocol::MessageSink& sink)
      : body_lines_(body_lines), left_(body_lines.value_or(0)), sink_(sink) {}

  // false: TOP has sent all it asked for.
  bool block(std::string_view data) {
    while (!data.empty()) {
      if (!started_ && !held_cr_ && !in_header_ && !body_lines_) {  // RETR's body: whole lines at once
        auto last = data.rfind('\n');
        if (last == std::string_view::npos) return part(data);
        sink_.lines(data.substr(0, last + 1));
        data.remove_prefix(last + 1);
        continue;
      }
      auto newline = data.find('\n');
      if (!part(data.substr(0, newline))) return false;
      if (newline == std::string_view::npos) return true;
      if (!end_line()) return false;
      data.remove_prefix(newline + 1);
    }
    return true;
  }

  // The file ended: a last line without LF ends as if it had one.
  void end() {
    if (started_ || held_cr_) end_line();
  }

 private:
  // Bytes of the current line, no LF among them.
  bool part(std::string_view bytes) {
    if (bytes.empty()) return true;
    bool cr = bytes.back() == '\r';  // perhaps the line end: held until the next byte says
    if (cr) bytes.remove_suffix(1);
    if (held_cr_ || !bytes.empty()) {
      if (!started_ && !may_start()) return false;
      started_ = true;
      if (held_cr_) sink_.text("\r");
      if (!bytes.empty()) sink_.text(bytes);
    }
    held_cr_ = cr;
    return true;
  }

  bool end_line() {
    held_cr_ = false;
    if (!started_ && in_header_) {  // the empty line after the header
      in_header_ = false;
      sink_.end_line();
      return may_start();
    }
    if (!started_ && !may_start()) return false;
    sink_.end_line();
    started_ = false;
    if (!in_header_ && body_lines_) --left_;
    return may_start();
  }

  // Whether another line may be sent: TOP's body has its count.
  bool may_start() const { return in_header_ || !body_lines_ || left_ > 0; }

  std::optional<std::uint64_t> body_lines_;
  std::uint64_t left_;
  protocol::MessageSink& sink_;
  bool in_header_ = true;
  bool started_ = false;  // some of the current line was sent
  bool held_cr_ = false;  // the last byte seen was a CR, not yet sent
};

}  // namespace

std::optional<std::uint64_t> wire_size(int fd) {
  std::uint64_t size = 0;
  bool after_cr = false;  // the last byte of the block before was CR
  bool ok = each_block(fd, params::read_block, [&](std::string_view block) {
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
  // TOP needs the header and a few lines: a small first read, not the whole message.
  bool ok = each_block(fd, body_lines ? params::top_block : params::read_block, [&](std::string_view block) {
    if (sender.block(block)) return true;
    finished = true;
    return false;
  });
  if (ok && !finished) sender.end();
  return ok;
}

}  // namespace popd::mailbox::maildir
