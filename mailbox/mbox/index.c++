#include "mailbox/mbox/index.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include <xxhash.h>

#include "sys/fd.h"
#include "sys/file.h"
#include "mailbox/file_window.h"
#include "params.h"

namespace popd::mailbox {
namespace {

// Layout (host byte order; the index never leaves the host): a Header,
// `count` Entries (the UW IMAP pseudo-message first if there is one), the
// X-UIDL values (x-uidl scheme), and an XXH3-128 checksum of all of them,
// against torn and stale writes.
constexpr char magic[16] = "popd-index-2\n";

struct Header {
  char magic[16];
  std::uint64_t entry_size, count, has_internal, parsed_end;
  FileState state;  // the spool's when it was parsed (or last changed by popd)
  std::uint64_t scheme;    // the --uidl-scheme it was parsed for
  std::uint64_t validity;  // bit 32: known; the UIDVALIDITY below
  std::uint64_t x_uidls;   // bytes of X-UIDL values after the entries
};

struct Entry {
  std::uint64_t record_offset, content_length, size, from_hash, old_key;
  std::uint32_t from_length, duplicate, old_found, reserved;
  std::array<unsigned char, 16> digest;
};
static_assert(sizeof(Entry) == 72 && sizeof(Header) == 128, "no padding in the index");

constexpr std::uint64_t validity_known = std::uint64_t{1} << 32;
// Saved within a timestamp tick of the spool's last change: verify in full.
constexpr std::uint64_t racy = std::uint64_t{1} << 33;
// The spool's times may come from a coarse clock, a tick apart: anything
// closer than this to the save is racy.
constexpr std::int64_t racy_nanoseconds = 2'000'000'000;

using Checksum = std::array<unsigned char, sizeof(XXH128_canonical_t)>;

class Hasher {
 public:
  Hasher() { XXH3_128bits_reset(state_.get()); }
  void update(const void* data, std::size_t size) { XXH3_128bits_update(state_.get(), data, size); }
  Checksum finish() {
    XXH128_canonical_t canonical;
    XXH128_canonicalFromHash(&canonical, XXH3_128bits_digest(state_.get()));
    Checksum value;
    std::memcpy(value.data(), canonical.digest, value.size());
    return value;
  }

 private:
  struct Free {
    void operator()(XXH3_state_t* state) const { XXH3_freeState(state); }
  };
  std::unique_ptr<XXH3_state_t, Free> state_{XXH3_createState()};
};

Entry entry_of(const Message& message) {
  return {message.record_offset,
          message.content_length,
          message.size,
          message.from_hash,
          message.old_key,
          static_cast<std::uint32_t>(message.content_offset - message.record_offset),
          message.duplicate,
          message.old_found,
          0,
          message.digest};
}

Message message_of(const Entry& entry) {
  Message message;
  message.record_offset = entry.record_offset;
  message.content_offset = entry.record_offset + entry.from_length;
  message.content_length = entry.content_length;
  message.size = entry.size;
  message.digest = entry.digest;
  message.duplicate = entry.duplicate;
  message.from_hash = entry.from_hash;
  message.old_key = entry.old_key;
  message.old_found = entry.old_found != 0;
  return message;
}

// The entries must describe records in file order, each within the
// parsed part: whatever the index says, nothing is read or removed
// outside a record the parser could have found.
class Order {
 public:
  explicit Order(std::uint64_t parsed_end) : parsed_end_(parsed_end) {}
  bool admits(const Entry& entry) {
    if (entry.record_offset < next_ || entry.from_length < 5) return false;
    std::uint64_t content = entry.record_offset + entry.from_length;
    if (content > parsed_end_ || entry.content_length > parsed_end_ - content) return false;
    if (entry.size > 2 * entry.content_length + 4) return false;  // CRLF at most doubles it
    next_ = content + entry.content_length;
    return true;
  }

 private:
  std::uint64_t parsed_end_;
  std::uint64_t next_ = 0;
};

// The bytes that must be unchanged for a message: the line end before its
// From_ line (none for the first record) and the line, up to
// index_from_bytes of it.
struct FromLine {
  std::uint64_t begin, end;
  explicit FromLine(const Message& m)
      : begin(m.record_offset > 0 ? m.record_offset - 1 : 0),
        end(m.record_offset + std::min<std::uint64_t>(m.content_offset - m.record_offset, params::index_from_bytes)) {}
};

// Do the messages still start, after a line end, with the From_ line that
// was parsed? Read through a window that moves along the spool: the spool
// is not copied to look at a line of each message, and only the pages
// near those lines are mapped. One thread: with two, each window moved
// costs an interrupt of the other core (to drop the old mapping from its
// TLB), and two threads were slower than one. Where no window can be
// mapped (a file system without mmap), each line is read instead: a
// little slower, still far less than a parse.
// One message's check, through `window` while it can be mapped (else
// `mappable` turns false and the line is read).
bool check_record(FileWindow& window, bool& mappable, int fd, std::uint64_t size, const Message& m) {
  FromLine line(m);
  char read[params::index_from_bytes + 1];
  std::optional<std::string_view> bytes;
  if (mappable) bytes = window.bytes(fd, line.begin, line.end, size, params::index_check_window);
  if (!bytes) {
    mappable = false;
    std::size_t length = line.end - line.begin;
    if (line.end > size || !sys::pread_all(fd, read, length, line.begin)) return false;
    bytes = std::string_view(read, length);
  }
  const char* at = bytes->data();
  if (m.record_offset > 0 && *at++ != '\n') return false;
  return from_line_hash({at, static_cast<std::size_t>(line.end - m.record_offset)}) == m.from_hash &&
         !window.cut_short();
}

bool records_unchanged(int fd, std::uint64_t size, const Messages& messages, std::size_t first = 0) {
  FileWindow window;
  bool mappable = true;
  for (std::size_t i = first; i < messages.size(); ++i)
    if (!check_record(window, mappable, fd, size, messages[i])) return false;
  return !window.cut_short();
}

// Writes `data` at `offset` where the file does not hold it already: an
// index saved again after new mail or DELE of the last messages is mostly
// what it was, and reading and comparing a block cost a third of writing
// it into the page cache (which ext4 then also writes out).
bool write_changed(int fd, std::string_view data, std::uint64_t offset, char* scratch) {
  for (std::size_t at = 0; at < data.size(); at += params::index_block) {
    std::string_view piece = data.substr(at, params::index_block);
    ssize_t got = ::pread(fd, scratch, piece.size(), static_cast<off_t>(offset + at));
    if (got == static_cast<ssize_t>(piece.size()) && std::memcmp(scratch, piece.data(), piece.size()) == 0) continue;
    if (!sys::pwrite_all(fd, piece, offset + at)) return false;
  }
  return true;
}

// The index at `path`, open for writing in place if it is what
// load_index() takes: a regular file of the user's, and with one name, so
// that no other file is written through it. Anything else there (a second
// name left by a backup with hard links, cp -al or rsnapshot; a file left
// by root; a symbolic link) is replaced by a new file, as a rename would:
// refusing would leave every later login to parse the whole spool.
sys::UniqueFd open_for_save(const std::string& path, struct stat& st) {
  constexpr int flags = O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
  sys::UniqueFd fd(::open(path.c_str(), flags, 0600));
  if (fd && ::fstat(fd.get(), &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == ::geteuid() && st.st_nlink == 1)
    return fd;
  fd.reset();
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return fd;
  fd.reset(::open(path.c_str(), flags | O_EXCL, 0600));
  if (fd && ::fstat(fd.get(), &st) != 0) fd.reset();
  return fd;
}

bool fail(std::string& error, const std::string& what) {
  error = what + ": " + sys::error_text(errno);
  return false;
}

}  // namespace

std::int64_t now_ns() {
  timespec clock{};
  ::clock_gettime(CLOCK_REALTIME, &clock);
  return std::int64_t{clock.tv_sec} * 1'000'000'000 + clock.tv_nsec;
}

FileState FileState::of(const struct stat& st) {
  return {static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino),
          static_cast<std::uint64_t>(st.st_size), st.st_mtim.tv_sec, st.st_mtim.tv_nsec,
          st.st_ctim.tv_sec, st.st_ctim.tv_nsec};
}

bool message_in_place(FileWindow& window, int fd, const Mbox& box, std::size_t index) {
  bool mappable = true;
  if (!check_record(window, mappable, fd, box.end, box.messages[index])) return false;
  mappable = true;
  return index + 1 == box.messages.size() || check_record(window, mappable, fd, box.end, box.messages[index + 1]);
}

bool records_unchanged_from(int fd, std::uint64_t size, const Messages& messages, std::size_t first) {
  return records_unchanged(fd, size, messages, first);
}

std::optional<Mbox> load_index(const std::string& path, int fd, const FileState& now, UidScheme scheme,
                               bool verify_all, bool* lazily) {
  if (lazily) *lazily = false;
  // Anything but the user's own file is not read; the save replaces it.
  sys::OwnFile file = sys::open_own_file(path, O_RDONLY, ::geteuid());
  if (!file.fd) return {};
  const sys::UniqueFd& in = file.fd;
  const struct stat& st = file.st;
  Header header;
  if (!sys::pread_all(in.get(), reinterpret_cast<char*>(&header), sizeof header, 0)) return {};
  if (std::memcmp(header.magic, magic, sizeof magic) != 0 || header.entry_size != sizeof(Entry) ||
      header.has_internal > 1 || header.count < header.has_internal ||
      header.count > (static_cast<std::uint64_t>(st.st_size) - sizeof header) / sizeof(Entry) ||
      header.x_uidls > static_cast<std::uint64_t>(st.st_size) ||
      static_cast<std::uint64_t>(st.st_size) !=
          sizeof header + header.count * sizeof(Entry) + header.x_uidls + sizeof(Checksum) ||
      header.scheme != static_cast<std::uint64_t>(scheme))
    return {};
  // The same file, no shorter; if no longer, unchanged since (ctime
  // follows every write and cannot be set back).
  const FileState& then = header.state;
  if (then.device != now.device || then.inode != now.inode || header.parsed_end > now.size) return {};
  if (header.parsed_end == now.size && !(then == now)) return {};

  Mbox box;
  box.end = header.parsed_end;
  box.scheme = scheme;
  if (header.validity & validity_known) box.validity = static_cast<std::uint32_t>(header.validity);
  bool unchanged = header.parsed_end == now.size && then == now && !(header.validity & racy) && !verify_all;
  Hasher hasher;
  hasher.update(&header, sizeof header);
  Order order(header.parsed_end);
  const std::size_t block_entries = std::min<std::uint64_t>(params::index_block / sizeof(Entry), header.count);
  auto block = std::make_unique_for_overwrite<Entry[]>(block_entries);
  for (std::uint64_t done = 0; done < header.count;) {
    std::size_t n = std::min<std::uint64_t>(block_entries, header.count - done);
    if (!sys::pread_all(in.get(), reinterpret_cast<char*>(block.get()), n * sizeof(Entry),
                       sizeof header + done * sizeof(Entry)))
      return {};
    hasher.update(block.get(), n * sizeof(Entry));
    for (std::size_t i = 0; i < n; ++i) {
      if (!order.admits(block[i])) return {};
      if (done + i == 0 && header.has_internal)
        box.internal = message_of(block[i]);
      else
        box.messages.push_back(message_of(block[i]));
    }
    done += n;
  }
  std::uint64_t tail = sizeof header + header.count * sizeof(Entry);
  box.x_uidls.resize(header.x_uidls);
  if (!sys::pread_all(in.get(), box.x_uidls.data(), box.x_uidls.size(), tail)) return {};
  hasher.update(box.x_uidls.data(), box.x_uidls.size());
  Checksum stored;
  if (!sys::pread_all(in.get(), reinterpret_cast<char*>(stored.data()), stored.size(), tail + header.x_uidls) ||
      stored != hasher.finish())
    return {};
  for (const Message& message : box.messages)
    if (message.old_found && scheme == UidScheme::x_uidl &&
        (message.old_key >> 8) + (message.old_key & 0xff) > box.x_uidls.size())
      return {};
  if (unchanged) {
    if (lazily) *lazily = true;
  } else if (header.parsed_end < now.size && !(header.validity & racy) && !verify_all) {
    // Grown: mail appended. The rest is checked where it is touched.
    if (!box.messages.empty() && !records_unchanged(fd, box.end, {box.messages.back()})) return {};
    if (lazily) *lazily = true;
  } else {
    if (box.internal && !records_unchanged(fd, box.end, {*box.internal})) return {};
    if (!records_unchanged(fd, box.end, box.messages)) return {};
  }
  // The stored numbers are popd's own; which messages keep a scheme's id
  // depends on the others too.
  if (scheme != UidScheme::popd) box.renumber();
  return box;
}

bool save_index(const std::string& path, const Mbox& box, const FileState& state, std::string& error,
                std::optional<std::int64_t> observed_ns) {
  struct stat st;
  sys::UniqueFd out = open_for_save(path, st);
  if (!out) return fail(error, "cannot open index " + path);
  Header header{};
  std::memcpy(header.magic, magic, sizeof magic);
  header.entry_size = sizeof(Entry);
  header.has_internal = box.internal ? 1 : 0;
  header.count = box.messages.size() + header.has_internal;
  header.parsed_end = box.end;
  header.state = state;
  header.scheme = static_cast<std::uint64_t>(box.scheme);
  header.validity = box.validity ? validity_known | *box.validity : 0;
  std::int64_t seen = observed_ns.value_or(now_ns());
  if (seen - (state.ctime_sec * 1'000'000'000 + state.ctime_nsec) < racy_nanoseconds) header.validity |= racy;
  header.x_uidls = box.x_uidls.size();
  Hasher hasher;
  std::string buffer;
  buffer.reserve(params::index_block + sizeof(Entry));
  auto scratch = std::make_unique_for_overwrite<char[]>(params::index_block);
  bool ok = true;
  std::uint64_t written = 0;
  auto write = [&](std::string_view data) {
    ok = ok && write_changed(out.get(), data, written, scratch.get());
    written += data.size();
  };
  auto flush = [&] {
    hasher.update(buffer.data(), buffer.size());
    write(buffer);
    buffer.clear();
  };
  buffer.append(reinterpret_cast<const char*>(&header), sizeof header);
  auto put = [&](const Message& message) {
    Entry entry = entry_of(message);
    buffer.append(reinterpret_cast<const char*>(&entry), sizeof entry);
    if (buffer.size() >= params::index_block) flush();
  };
  if (box.internal) put(*box.internal);
  for (const Message& message : box.messages) put(message);
  flush();
  hasher.update(box.x_uidls.data(), box.x_uidls.size());
  write(box.x_uidls);
  Checksum checksum = hasher.finish();
  write({reinterpret_cast<const char*>(checksum.data()), checksum.size()});
  // An older index may have been longer.
  if (ok && (written == static_cast<std::uint64_t>(st.st_size) || ::ftruncate(out.get(), static_cast<off_t>(written)) == 0))
    return true;
  fail(error, "cannot write index " + path);
  // Not worth keeping: a half-written index only fails its checksum.
  [[maybe_unused]] int emptied = ::ftruncate(out.get(), 0);
  return false;
}

}  // namespace popd::mailbox
