#include "mailbox/mbox/journal.h"

#include <fcntl.h>
#include <sys/statfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>

namespace popd::mailbox::journal {

bool hash_range(int fd, int version, std::uint64_t begin, std::uint64_t end, Digest::Value& value) {
  Checksum digest(version);
  if (!read_blocks(fd, begin, end - begin, [&](std::string_view block, std::uint64_t) {
        digest.update(block);
        return true;
      }))
    return false;
  value = digest.finish();
  return true;
}

bool fail(std::string& error, std::string_view what) {
  error = std::string(what) + ": " + sys::error_text(errno);
  return false;
}

bool remove_journal(const std::string& journal) {
  return ::unlink(journal.c_str()) == 0 && sys::sync_directory_of(journal);
}

// The journals of an older popd name the mailbox by st_dev and inode.
bool same_file(int fd, std::uint64_t device, std::uint64_t inode) {
  struct stat st;
  return ::fstat(fd, &st) == 0 && static_cast<std::uint64_t>(st.st_dev) == device &&
         static_cast<std::uint64_t>(st.st_ino) == inode;
}

std::optional<FileId> file_id(int fd) {
  struct stat st;
  struct statfs fs;
  if (::fstat(fd, &st) != 0 || ::fstatfs(fd, &fs) != 0) return std::nullopt;
  FileId id;
  static_assert(sizeof fs.f_fsid == sizeof id.fsid);
  std::memcpy(&id.fsid, &fs.f_fsid, sizeof id.fsid);
  id.inode = st.st_ino;
  alignas(file_handle) unsigned char storage[sizeof(file_handle) + sizeof id.handle];
  auto* handle = reinterpret_cast<file_handle*>(storage);
  handle->handle_bytes = sizeof id.handle;
  int mount_id;
  if (::name_to_handle_at(fd, "", handle, &mount_id, AT_EMPTY_PATH) == 0 && handle->handle_bytes <= sizeof id.handle) {
    id.handle_type = handle->handle_type;
    id.handle_bytes = handle->handle_bytes;
    std::memcpy(id.handle.data(), handle->f_handle, handle->handle_bytes);
  }
  return id;
}

bool same_file_id(const FileId& recorded, const FileId& now) {
  if (recorded.handle_bytes != 0 && now.handle_bytes != 0)
    return recorded.handle_type == now.handle_type && recorded.handle_bytes == now.handle_bytes &&
           std::memcmp(recorded.handle.data(), now.handle.data(), recorded.handle_bytes) == 0;
  return recorded.fsid == now.fsid && recorded.inode == now.inode;
}

std::string failed_sync_marker(const std::string& journal) { return journal + ".sync-failed"; }

std::string failed_sync_marker_of_this_boot(const std::string& journal) {
  std::string boot = this_boot();
  if (!boot.empty() && boot.back() == '\n') boot.pop_back();
  return failed_sync_marker(journal) + "." + boot;
}

std::string this_boot() {
  sys::UniqueFd fd(::open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC));
  char id[64] = {};
  ssize_t n = fd ? ::read(fd.get(), id, sizeof id - 1) : -1;
  return n > 0 ? std::string(id, n) : std::string();
}

bool a_sync_failed = false;

// Written whole under another name and renamed, so that the marker is the
// boot's id; where that fails (EIO, a full disk) an empty marker is made in
// place, which its ctime dates.
void mark_failed_sync(const std::string& journal) {
  std::string path = failed_sync_marker(journal), temporary = path + ".new";
  ::unlink(temporary.c_str());
  sys::UniqueFd fd(::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  bool written = fd && sys::write_all(fd.get(), this_boot()) && ::fsync(fd.get()) == 0;
  if (!written || ::rename(temporary.c_str(), path.c_str()) != 0) {
    ::unlink(temporary.c_str());
    fd.reset(::open(failed_sync_marker_of_this_boot(journal).c_str(),
                    O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
  }
  sys::sync_directory_of(path);
}

std::optional<FileId> directory_id(const std::string& journal) {
  sys::UniqueFd directory(::open(sys::directory_of(journal).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  return directory ? file_id(directory.get()) : std::nullopt;
}

bool mark_pending(int fd, const std::string& journal, std::string& error) {
  auto id = directory_id(journal);
  if (!id) return fail(error, "cannot open the directory of recovery journal " + journal);
  if (::fsetxattr(fd, pending_attribute, &*id, sizeof *id, 0) != 0)
    return errno == ENOTSUP || errno == EPERM || fail(error, "cannot mark the mailbox");
  // Durable before the journal is: fdatasync would not carry an attribute.
  return ::fsync(fd) == 0 || fail(error, "cannot sync mailbox");
}

void clear_pending(int fd) { ::fremovexattr(fd, pending_attribute); }

Layout::Layout(int version, const Header3& header, const std::vector<Step>& step_list) {
  ranges = sizeof header;
  steps = ranges + header.ranges * sizeof(Range);
  std::uint64_t after_steps = steps + header.steps * sizeof(Step);
  bindings = sources = after_steps;
  if (version == 5) {
    sources = bindings + sizeof(Bindings);
    after_steps = sources + header.steps * sizeof(Digest::Value);
  }
  if (version == 3) {
    saved = after_steps;
    slot = 0;
    for (const Step& step : step_list) slot += saved_length(step);  // one slot holds all
    checksum = saved + slot;
    progress = round_up(checksum + sizeof(Digest::Value));
  } else {
    checksum = after_steps;
    saved = round_up(checksum + sizeof(Digest::Value));
    slot = 0;
    for (const Step& step : step_list) slot = std::max(slot, saved_length(step));
    progress = round_up(saved + 2 * slot);
  }
  size = progress + (header.steps + (version == 3 ? 1 : 2)) * progress_block;
}

// Durability comes from fdatasync (the data and the size; the times need
// no flush). No sync_file_range to start writeback early: the kernel
// counts the bytes it starts twice in the writer's write_bytes, and what
// an administrator measures is what the commit is judged by.
bool sync(int fd) {
  if (::fdatasync(fd) == 0) return true;
  a_sync_failed = true;
  return false;
}

// Copies [from, from + length) of `in` to `to` in `out`, front to back: a
// move down within one file overwrites no byte before it was read.
bool copy(int in, std::uint64_t from, std::uint64_t length, int out, std::uint64_t to) {
  return read_blocks(in, from, length, [&](std::string_view block, std::uint64_t done) {
    return sys::pwrite_all(out, block, to + done);
  });
}

// Copies the kept bytes of the new file's [from, to) into place.
bool move_into_place(int fd, const Moves& moves, std::uint64_t from, std::uint64_t to) {
  return moves.pieces(from, to, [&](std::uint64_t source, std::uint64_t length, std::uint64_t destination) {
    return copy(fd, source, length, fd, destination);
  });
}

bool Journal::create(const std::string& path, std::string& error, bool& named) {
  std::string temporary = path + ".new";
  ::unlink(temporary.c_str());
  named = false;
  journal_fd_.reset(::open(temporary.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!journal_fd_) return fail(error, "cannot create recovery journal " + temporary);
  if (!write_plan() || !sync(journal_fd_.get()) || ::rename(temporary.c_str(), path.c_str()) != 0) {
    fail(error, "cannot write recovery journal " + path);
    ::unlink(temporary.c_str());
    return false;
  }
  named = true;
  // Should the name not be durable, neither would a removal be: the
  // journal stays, and the commit may take effect at the next recovery.
  if (!sys::sync_directory_of(path)) {
    a_sync_failed = true;
    return fail(error, "cannot sync the directory of recovery journal " + path);
  }
  return true;
}

bool Journal::run(Resume from) {
  for (std::size_t i = from.step; i < steps_.size(); ++i) {
    const Step& step = steps_[i];
    std::uint64_t start = step.begin;
    if (i == from.step && from.redo) {
      if (!copy(journal_fd_.get(), saved_offset(i), saved_length(step), fd_, step.begin)) return false;
      start = step.saved_end;
    } else if (version_ >= 4 && !save(i)) {
      return false;
    }
    if (!move_into_place(fd_, moves_, start, step.end) || !sync(fd_)) return false;
    if (version_ == 3 && !record(i, sum_)) return false;
  }
  // The marker may overwrite a source of the last step: no redo after it.
  return version_ == 3 || from.step == steps_.size() || record(steps_.size(), sum_);
}

bool Journal::finish(const std::string& path, bool marked) {
  if (!marked && !(sys::pwrite_all(fd_, {header_.marker.data(), marker_length(header_)}, header_.kept_end) &&
                   sync(fd_) && record(marker_index(), sum_)))
    return false;
  return ::ftruncate(fd_, static_cast<off_t>(header_.kept_end)) == 0 && sync(fd_) &&
         remove_journal(path);
}

Resume Journal::resume() const {
  if (version_ == 3) {
    std::size_t done = 0;
    while (done < steps_.size() && recorded(done, sum_)) ++done;
    return {done, true};
  }
  if (recorded(steps_.size(), sum_)) return {steps_.size(), false};
  for (std::size_t i = steps_.size(); i-- > 0;) {
    Progress found;
    if (!read_record(i, found)) continue;
    Digest::Value slot{};
    bool sound = hash_range(journal_fd_.get(), version_, saved_offset(i), saved_offset(i) + saved_length(steps_[i]),
                            slot) && found.journal == step_tag(slot);
    return {i, true, !sound, found.journal};
  }
  return {0, false};
}

bool Journal::marker_in_place() const {
  std::array<char, sizeof header_.marker> found{};
  std::uint64_t n = marker_length(header_);
  struct stat st;
  if (::fstat(fd_, &st) != 0) return !(unreadable_ = true);
  if (static_cast<std::uint64_t>(st.st_size) < header_.kept_end + n) return false;  // cut there
  if (!sys::pread_all(fd_, found.data(), n, header_.kept_end)) return !(unreadable_ = true);
  return std::memcmp(found.data(), header_.marker.data(), n) == 0;
}

Fit Journal::fits_from(const Resume& from) const {
  if (from.step == steps_.size()) return fits_after();
  if (!from.redo) return matches(header_.begin, header_.end, bindings_.before);  // nothing moved yet
  Fit fit = sources_fit(from.step, true);
  for (std::size_t i = from.step + 1; i < steps_.size() && fit == Fit::yes; ++i) fit = sources_fit(i, false);
  return fit == Fit::yes ? tail_fits() : fit;
}

Fit Journal::fits_after() const {
  Fit fit = matches(header_.begin, header_.kept_end, bindings_.after);
  return fit == Fit::yes ? tail_fits() : fit;
}

bool Journal::reaffirm(const Resume& from) {
  if (from.step == steps_.size()) return record(from.step, sum_);
  return !from.redo || record(from.step, from.tag);  // no record: nothing to write again
}


Fit Journal::matches(std::uint64_t begin, std::uint64_t end, const Digest::Value& expected) const {
  Digest::Value found{};
  if (!hash_range(fd_, version_, begin, end, found)) return Fit::unreadable;
  return found == expected ? Fit::yes : Fit::differs;
}


Fit Journal::tail_fits() const {
  return matches(header_.kept_end + marker_length(header_), header_.end, bindings_.tail);
}

Fit Journal::sources_fit(std::size_t i, bool redo) const {
  Checksum digest(version_);
  auto add = [&](std::string_view block, auto) {
    digest.update(block);
    return true;
  };
  const Step& step = steps_[i];
  std::uint64_t from = redo ? step.saved_end : step.begin;
  bool read = (!redo || read_blocks(journal_fd_.get(), saved_offset(i), saved_length(step), add)) &&
              moves_.pieces(from, step.end, [&](std::uint64_t source, std::uint64_t length, auto) {
                return read_blocks(fd_, source, length, add);
              });
  if (!read) return Fit::unreadable;
  return digest.finish() == sources_[i] ? Fit::yes : Fit::differs;
}

bool Journal::write_plan() {
  Checksum digest(version_);
  std::uint64_t at = 0;
  auto put = [&](std::string_view bytes) {
    digest.update(bytes);
    at += bytes.size();
    return sys::pwrite_all(journal_fd_.get(), bytes, at - bytes.size());
  };
  if (!put(bytes_of(header_)) ||
      !put({reinterpret_cast<const char*>(ranges_.data()), ranges_.size() * sizeof(Range)}) ||
      !put({reinterpret_cast<const char*>(steps_.data()), steps_.size() * sizeof(Step)}) ||
      (bound() && !(put(bytes_of(bindings_)) &&
                    put({reinterpret_cast<const char*>(sources_.data()), sources_.size() * sizeof(Digest::Value)}))))
    return false;
  sum_ = digest.finish();
  if (!sys::pwrite_all(journal_fd_.get(), bytes_of(sum_), at)) return false;
  int error = ::posix_fallocate(journal_fd_.get(), static_cast<off_t>(layout_.saved),
                                static_cast<off_t>(layout_.size - layout_.saved));
  errno = error;
  return error == 0;
}

bool Journal::save(std::size_t i) {
  const Step& step = steps_[i];
  Checksum digest(version_);
  std::uint64_t at = saved_offset(i);
  bool ok = moves_.pieces(step.begin, step.saved_end, [&](std::uint64_t source, std::uint64_t length, auto) {
    return read_blocks(fd_, source, length, [&](std::string_view block, auto) {
      digest.update(block);
      at += block.size();
      return sys::pwrite_all(journal_fd_.get(), block, at - block.size());
    });
  });
  return ok && (saved_length(step) == 0 || sync(journal_fd_.get())) && record(i, step_tag(digest.finish()));
}

Digest::Value Journal::step_tag(const Digest::Value& saved) const {
  Checksum digest(version_);
  digest.update(bytes_of(sum_));
  digest.update(bytes_of(saved));
  return digest.finish();
}

std::uint64_t Journal::saved_offset(std::size_t index) const {
  if (version_ >= 4) return layout_.saved + (index % 2) * layout_.slot;
  std::uint64_t at = layout_.saved;
  for (std::size_t i = 0; i < index; ++i) at += saved_length(steps_[i]);
  return at;
}


Progress Journal::progress_record(std::uint64_t index, const Digest::Value& tag) const {
  Progress progress{};
  std::memcpy(progress.magic, progress_magic, sizeof progress.magic);
  progress.index = index;
  progress.journal = tag;
  progress.check = Checksum::of(version_, bytes_of(progress).substr(0, offsetof(Progress, check)));
  return progress;
}


bool Journal::record(std::uint64_t index, const Digest::Value& tag) {
  return sys::pwrite_all(journal_fd_.get(), bytes_of(progress_record(index, tag)),
                        layout_.progress + index * progress_block) &&
         sync(journal_fd_.get());
}

bool Journal::read_record(std::uint64_t index, Progress& found) const {
  // The journal is as long as its layout (Journal::open checks): a failed
  // read is the disk's, not an absent record.
  if (!pread_value(journal_fd_.get(), found, layout_.progress + index * progress_block)) return !(unreadable_ = true);
  Progress expected = progress_record(index, found.journal);
  return std::memcmp(&found, &expected, sizeof found) == 0;
}

bool Journal::recorded(std::uint64_t index, const Digest::Value& tag) const {
  Progress found;
  return read_record(index, found) && found.journal == tag;
}

bool Journal::bind(const FileId& spool) {
  bindings_.spool = spool;
  sources_.assign(steps_.size(), Digest::Value{});
  Checksum before(version_), after(version_), tail(version_), step_sources(version_);
  std::size_t step = 0;
  // Every byte of [begin, end), at its offset, in file order.
  std::uint64_t tail_begin = header_.kept_end + marker_length(header_);
  auto whole = [&](std::string_view block, std::uint64_t offset) {
    before.update(block);
    if (offset + block.size() > tail_begin) tail.update(block.substr(std::max(tail_begin, offset) - offset));
    return true;
  };
  // The kept bytes that go to `destination` of the new file, block by
  // block (their sources rise with their destinations), into the
  // checksums of the new file and of the step that moves them.
  auto kept = [&](std::string_view block, std::uint64_t destination) {
    after.update(block);
    while (!block.empty()) {
      std::uint64_t here = std::min<std::uint64_t>(block.size(), steps_[step].end - destination);
      step_sources.update(block.substr(0, here));
      block.remove_prefix(here);
      destination += here;
      if (destination == steps_[step].end) sources_[step++] = step_sources.finish();
    }
    return true;
  };
  // One pass over [begin, end) in file order: removed and kept alike go
  // into `before`; kept bytes, in the same order, make the new file.
  std::uint64_t at = header_.begin;
  auto removed = [&](std::uint64_t until) {
    std::uint64_t from = at;
    return until <= from || read_blocks(fd_, from, until - from, [&](std::string_view block, std::uint64_t done) {
             return whole(block, from + done);
           });
  };
  bool ok = moves_.pieces(header_.begin, header_.kept_end, [&](std::uint64_t source, std::uint64_t length,
                                                               std::uint64_t destination) {
    if (!removed(source)) return false;
    at = source + length;
    return read_blocks(fd_, source, length, [&](std::string_view block, std::uint64_t done) {
      return whole(block, source + done) && kept(block, destination + done);
    });
  });
  if (!ok || !removed(header_.end)) return false;
  bindings_.before = before.finish();
  bindings_.after = after.finish();
  bindings_.tail = tail.finish();
  return step == steps_.size();
}

// The plan must describe a commit popd could have made of this header.
bool plausible(const Header3& header, const std::vector<Range>& ranges, const std::vector<Step>& steps) {
  if (ranges.empty() || steps.empty() || ranges.front().begin != header.begin) return false;
  std::uint64_t removed = 0, at = header.begin;
  for (const Range& range : ranges) {
    if (range.begin < at || range.end <= range.begin || range.end > header.end) return false;
    removed += range.end - range.begin;
    at = range.end;
  }
  if (header.end - removed != header.kept_end) return false;
  at = header.begin;
  for (const Step& step : steps) {
    if (step.begin != at || step.end <= step.begin || step.saved_end < step.begin || step.saved_end > step.end)
      return false;
    at = step.end;
  }
  return at == header.kept_end;
}

std::optional<Journal> Journal::open(int fd, int journal_fd, std::uint64_t journal_size, const Header3& header) {
  int version = std::memcmp(header.magic, magic_v3, sizeof header.magic) == 0   ? 3
                : std::memcmp(header.magic, magic_v4, sizeof header.magic) == 0 ? 4
                                                                                : 5;
  // Counts bounded by the journal's size before anything is allocated.
  if (header.kept_end < header.begin || header.end <= header.kept_end ||
      header.ranges > journal_size / sizeof(Range) || header.steps > journal_size / sizeof(Step))
    return std::nullopt;
  std::vector<Range> ranges(header.ranges);
  std::vector<Step> steps(header.steps);
  std::uint64_t at = sizeof header;
  if (!sys::pread_all(journal_fd, reinterpret_cast<char*>(ranges.data()), ranges.size() * sizeof(Range), at) ||
      !sys::pread_all(journal_fd, reinterpret_cast<char*>(steps.data()), steps.size() * sizeof(Step),
                     at + ranges.size() * sizeof(Range)) ||
      !plausible(header, ranges, steps))
    return std::nullopt;
  Layout layout(version, header, steps);
  Digest::Value computed{}, stored{};
  if (journal_size < layout.size || !hash_range(journal_fd, version, 0, layout.checksum, computed) ||
      !pread_value(journal_fd, stored, layout.checksum) || stored != computed)
    return std::nullopt;
  std::optional<Journal> journal(std::in_place, version, fd, header, std::move(ranges), std::move(steps));
  journal->sum_ = stored;
  if (version == 5) {
    journal->sources_.resize(header.steps);
    if (!pread_value(journal_fd, journal->bindings_, layout.bindings) ||
        !sys::pread_all(journal_fd, reinterpret_cast<char*>(journal->sources_.data()),
                       journal->sources_.size() * sizeof(Digest::Value), layout.sources))
      return std::nullopt;
  }
  return journal;
}

}  // namespace popd::mailbox::journal
