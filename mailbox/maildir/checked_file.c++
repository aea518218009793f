#include "mailbox/maildir/checked_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "sys/file.h"

namespace popd::mailbox::maildir {
namespace {

constexpr std::size_t end_line_size = 21;  // "end " 16 hex digits "\n"
constexpr std::size_t write_size = 64 * 1024;

std::string end_line(XXH64_hash_t hash) {
  char line[end_line_size + 1];
  std::snprintf(line, sizeof line, "end %016llx\n", static_cast<unsigned long long>(hash));
  return line;
}

}  // namespace

CheckedFile::CheckedFile(std::string path, std::string_view magic)
    : path_(std::move(path)), temporary_(path_ + ".new"), hash_(XXH3_createState(), &XXH3_freeState) {
  ::unlink(temporary_.c_str());  // left by a crash
  fd_.reset(::open(temporary_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd_ || !hash_ || XXH3_64bits_reset(hash_.get()) != XXH_OK) error_ = fd_ ? ENOMEM : errno;
  buffer_.reserve(write_size);
  add(magic);
}

CheckedFile::~CheckedFile() {
  if (fd_) ::unlink(temporary_.c_str());
}

void CheckedFile::add(std::string_view text) {
  buffer_ += text;
  if (buffer_.size() >= write_size) flush();
}

bool CheckedFile::flush() {
  if (error_ == 0) {
    XXH3_64bits_update(hash_.get(), buffer_.data(), buffer_.size());
    if (!sys::write_all(fd_.get(), buffer_)) error_ = errno;
  }
  buffer_.clear();
  return error_ == 0;
}

bool CheckedFile::finish(bool durable, std::string& error) {
  if (flush() && sys::write_all(fd_.get(), end_line(XXH3_64bits_digest(hash_.get()))) &&
      (!durable || ::fdatasync(fd_.get()) == 0) && ::rename(temporary_.c_str(), path_.c_str()) == 0) {
    fd_.reset();
    return true;
  }
  error = "cannot write " + path_ + ": " + sys::error_text(error_ ? error_ : errno);
  return false;
}

std::optional<std::string_view> checked_body(std::string_view text, std::string_view magic) {
  if (!text.starts_with(magic) || text.size() < magic.size() + end_line_size) return std::nullopt;
  std::size_t body_end = text.size() - end_line_size;
  if (text.substr(body_end) != end_line(XXH3_64bits(text.data(), body_end))) return std::nullopt;
  std::string_view body = text.substr(magic.size(), body_end - magic.size());
  // Whole lines, each ended: the readers' line loops step over each '\n'
  // and would step past the end of a last line without one.
  if (!body.empty() && body.back() != '\n') return std::nullopt;
  return body;
}

}  // namespace popd::mailbox::maildir
