#include "mailbox/commit.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <memory>
#include <optional>

#include <xxhash.h>

#include "sys/fd.h"
#include "sys/file.h"
#include "mailbox/digest.h"
#include "params.h"

namespace popd::mailbox {
namespace {

// The journal's checksum of a given version, 32 bytes: SHA-256 in version
// 1, XXH3-128 (padded) since. They guard against torn and lost writes, not
// against an adversary: the journal is the user's own file.
class Checksum {
 public:
  explicit Checksum(int version) : version_(version) {
    if (version_ != 1) XXH3_128bits_reset(state_.get());
  }
  void update(std::string_view bytes) {
    if (version_ == 1) sha256_.update(bytes);
    else XXH3_128bits_update(state_.get(), bytes.data(), bytes.size());
  }
  // Returns the checksum and starts over.
  Digest::Value finish() {
    if (version_ == 1) return sha256_.finish();
    XXH128_canonical_t canonical;
    XXH128_canonicalFromHash(&canonical, XXH3_128bits_digest(state_.get()));
    XXH3_128bits_reset(state_.get());
    Digest::Value value{};
    std::memcpy(value.data(), canonical.digest, sizeof canonical.digest);
    return value;
  }
  static Digest::Value of(int version, std::string_view bytes) {
    Checksum checksum(version);
    checksum.update(bytes);
    return checksum.finish();
  }

 private:
  struct FreeState {
    void operator()(XXH3_state_t* state) const { XXH3_freeState(state); }
  };
  int version_;
  Digest sha256_;
  std::unique_ptr<XXH3_state_t, FreeState> state_{XXH3_createState()};
};

std::string_view bytes_of(const auto& value) {
  return {reinterpret_cast<const char*>(&value), sizeof value};
}

template <typename T>
bool pread_value(int fd, T& value, std::uint64_t offset) {
  return sys::pread_all(fd, reinterpret_cast<char*>(&value), sizeof value, offset);
}

// Reads [from, from + length) of fd in blocks, front to back, and hands
// each to sink(block, offset in the range); false as soon as either fails.
template <typename Sink>
bool read_blocks(int fd, std::uint64_t from, std::uint64_t length, Sink&& sink) {
  std::size_t size = std::min<std::uint64_t>(length, params::read_block);
  std::unique_ptr<char[]> buffer(new char[size]);  // not zeroed: only what was read is used
  for (std::uint64_t done = 0; done < length;) {
    std::size_t n = std::min<std::uint64_t>(size, length - done);
    if (!sys::pread_all(fd, buffer.get(), n, from + done) || !sink(std::string_view(buffer.get(), n), done))
      return false;
    done += n;
  }
  return true;
}

// Checksums [begin, end) of fd.
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

// Termination signals wait until the commit is over; SIGKILL is what the
// journal is for.
class SignalsDeferred {
 public:
  SignalsDeferred() {
    sigset_t set;
    sigemptyset(&set);
    for (int signal : {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGALRM, SIGPIPE}) sigaddset(&set, signal);
    sigprocmask(SIG_BLOCK, &set, &saved_);
  }
  ~SignalsDeferred() { sigprocmask(SIG_SETMASK, &saved_, nullptr); }

 private:
  sigset_t saved_;
};

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

// A file as version 5 names it (the mailbox, and the journal's directory):
// by what survives a reboot. st_dev does not (btrfs, NFS and ZFS number
// their devices at mount time, LVM and sdX follow probe order), and
// recovery always runs after a reboot. The file handle (name_to_handle_at:
// inode and generation, as NFS exports use) does, on every file system that
// gives one; else the file system's id (statfs, from its UUID on ext4 and
// btrfs) and the inode. A handle is compared without the file system's id,
// which is not stable everywhere (XFS derives it from the device number):
// the file is already known to be on the file system the path leads to,
// and only a file that is not the same one must not pass. Handles of more
// than 64 bytes (none of the local file systems') fall back to id and inode.
struct FileId {
  std::uint64_t fsid = 0;
  std::uint64_t inode = 0;
  std::int32_t handle_type = 0;
  std::uint32_t handle_bytes = 0;  // 0: none
  std::array<unsigned char, 64> handle{};
};

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

// After a failed fsync the kernel may have marked the pages clean without
// writing them: what this boot reads back is not what the disk holds
// (the "fsyncgate" lesson). Where a commit or a recovery met one, this
// file beside the journal holds the boot's id, and no journal is acted on
// until the system has restarted (or an administrator removes the file).
std::string failed_sync_marker(const std::string& journal) { return journal + ".sync-failed"; }

std::string this_boot() {
  sys::UniqueFd fd(::open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC));
  char id[64] = {};
  ssize_t n = fd ? ::read(fd.get(), id, sizeof id - 1) : -1;
  return n > 0 ? std::string(id, n) : std::string();
}

// A sync failed since the last reset (remove_ranges and recover reset it):
// the journal left behind gets the marker.
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
    fd.reset(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
  }
  sys::sync_directory_of(path);
}

// Whether `st` changed before this boot began.
bool before_this_boot(const struct stat& st) {
  timespec now{}, up{};
  if (::clock_gettime(CLOCK_REALTIME, &now) != 0 || ::clock_gettime(CLOCK_BOOTTIME, &up) != 0) return false;
  return st.st_ctim.tv_sec < now.tv_sec - up.tv_sec;
}

// A refusal while the marker says a sync failed in this boot; nullopt when
// there is none, or one of an earlier boot, which is removed (the disk
// holds what it holds now).
std::optional<RecoveryResult> held_by_failed_sync(const std::string& journal) {
  std::string path = failed_sync_marker(journal);
  sys::OwnFile marker = sys::open_own_file(path, O_RDONLY, ::geteuid());
  if (!marker.fd && marker.refused.empty() && marker.error == ENOENT) return std::nullopt;
  if (!marker.fd)
    return RecoveryResult{false, path + ": " + (marker.refused.empty() ? sys::error_text(marker.error) : marker.refused) +
                                     "; recovery journal " + journal + " not applied",
                          "Mailbox cannot be checked for an interrupted commit, try again later"};
  char boot[64] = {};
  ssize_t n = ::read(marker.fd.get(), boot, sizeof boot - 1);
  std::string now = this_boot();
  bool earlier = n > 0 ? !now.empty() && std::string(boot, n) != now : n == 0 && before_this_boot(marker.st);
  if (earlier) {
    ::unlink(path.c_str());
    sys::sync_directory_of(path);
    return std::nullopt;
  }
  return RecoveryResult{false,
                        "a sync of recovery journal " + journal + " or of the mailbox failed in this boot; what is "
                        "read back may not be what the disk holds: left alone until the system restarts, or " + path +
                            " is removed",
                        "Mailbox waits for the disk to be checked"};
}

// While a commit may be under way, the mailbox carries this extended
// attribute: the FileId of the journal's directory. A login that finds no
// journal where the directory is another one (a home that is a mount point
// while it is not mounted: NFS, autofs, pam_mount) knows the journal is
// elsewhere, not that there is none. Where the file system keeps no user
// attributes, a commit goes without it.
constexpr char pending_attribute[] = "user.popd.journal";

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

// With no journal to be seen: a refusal if the mailbox says a commit's
// journal is in another directory than the one there now.
std::optional<RecoveryResult> pending_elsewhere(int fd, const std::string& journal) {
  FileId recorded{};
  ssize_t n = ::fgetxattr(fd, pending_attribute, &recorded, sizeof recorded);
  if (n < 0) return std::nullopt;  // none (ENODATA), or no attributes here
  auto now = directory_id(journal);
  if (n == sizeof recorded && now && same_file_id(recorded, *now)) {
    clear_pending(fd);  // the commit ended, or never began
    return std::nullopt;
  }
  return RecoveryResult{false,
                        "the mailbox was being committed with recovery journal " + journal + " in another directory "
                        "than the one there now (a home not mounted?); left alone until it is back (attribute " +
                            pending_attribute + " of the mailbox)",
                        "Mailbox cannot be checked for an interrupted commit, try again later"};
}

// --- versions 3 to 5: rolled forward ----------------------------------------
//
// Version 5, this popd's (host byte order; it never leaves the host): a
// Header3, the removed Ranges, the Steps, the Bindings, one checksum per
// step of its sources, and a checksum of all these. From the next block
// boundary, two slots, each as large as the most one step saves, which
// take turns holding the saved bytes of the step at hand, so that the
// journal stays small however much is moved. Then one block per step, one
// for the end of the moves and one for the marker, zero until a Progress
// record is written there: each in a block of its own, so that a torn write
// of one cannot spoil another.
//
// The Bindings tie the plan to the mailbox as it was: a journal is acted on
// only where the mailbox still holds what the plan expects there (all of
// [begin, end) before the first step; the bytes the steps still to run
// read from the mailbox; the kept bytes before the truncate; and, before
// the truncate or the removal that stands for it, the stale bytes it
// cuts, which no step writes), so that
// a journal left from another time (a commit cut short, then the mailbox
// rewritten by another program, or found again when a home comes back) is
// refused rather than replayed over other mail.
//
// Version 4 (the previous popd's, only ever recovered): the same without
// the Bindings and the sources' checksums. Version 3 (older still): the
// saved bytes of every step follow the Steps, in order, all before the
// checksum, no slots, and no block for the end of the moves.

constexpr char magic_v3[16] = "popd-journal-3\n";
constexpr char magic_v4[16] = "popd-journal-4\n";
constexpr char magic_v5[16] = "popd-journal-5\n";
constexpr char progress_magic[16] = "popd-progress\n";
constexpr std::uint64_t progress_block = 4096;

struct Header3 {
  char magic[16];
  std::uint64_t device, inode;  // the mailbox's, read back by versions 3 and 4 only
  std::uint64_t begin;     // first byte rewritten
  std::uint64_t kept_end;  // the new file size
  std::uint64_t end;       // the file size before
  std::uint64_t ranges, steps;
  // Random; written at kept_end before the truncate, so that recovery can
  // tell a truncated file that grew again from one not yet truncated.
  std::array<char, 16> marker;
};

// One move: [begin, end) of the file gets its kept bytes. Those for
// [begin, saved_end) may be overwritten by the step itself before it has
// read them (their source is below `end`): the journal has them.
struct Step {
  std::uint64_t begin, end, saved_end;
};

// Version 3: steps[index] is done; index == steps: the marker is written.
// Version 4: every step before `index` is done, and the saved bytes of
// steps[index] are durable in its slot; index == steps: all are done;
// steps + 1: the marker is written.
struct Progress {
  char magic[16];
  std::uint64_t index;
  // Whose record: the journal's checksum; in version 4, for a step, the
  // checksum of that and of the step's saved bytes, so that a slot damaged
  // after it was recorded is found.
  Digest::Value journal;
  Digest::Value check;  // of the fields above
};

std::uint64_t marker_length(const Header3& header) {
  return std::min<std::uint64_t>(sizeof header.marker, header.end - header.kept_end);
}

// Where the kept bytes go: each kept stretch after the first removed byte
// moves down by the bytes removed before it.
class Moves {
 public:
  Moves(const std::vector<Range>& removed, std::uint64_t end) {
    std::uint64_t destination = removed.front().begin;
    for (std::size_t i = 0; i < removed.size(); ++i) {
      std::uint64_t until = i + 1 < removed.size() ? removed[i + 1].begin : end;
      if (until > removed[i].end) segments_.push_back({removed[i].end, until - removed[i].end, destination});
      destination += until - removed[i].end;
    }
  }

  // Calls f(source, length, destination) for the pieces of the new file's
  // [from, to), in order; false as soon as f does.
  template <typename F>
  bool pieces(std::uint64_t from, std::uint64_t to, F&& f) const {
    for (auto s = first_reaching(from); s != segments_.end() && s->destination < to; ++s) {
      std::uint64_t lo = std::max(from, s->destination), hi = std::min(to, s->destination + s->length);
      if (lo < hi && !f(s->source + (lo - s->destination), hi - lo, lo)) return false;
    }
    return true;
  }

  // Steps of at least `floor` bytes, or of the bytes removed before them
  // if more: such a step cannot overwrite its own source.
  std::vector<Step> plan(std::uint64_t begin, std::uint64_t kept_end, std::uint64_t floor) const {
    std::vector<Step> steps;
    for (std::uint64_t at = begin; at < kept_end;) {
      std::uint64_t gap = first_reaching(at)->source - first_reaching(at)->destination;
      std::uint64_t end = std::min(kept_end, at + std::max(gap, floor));
      steps.push_back({at, end, saved_end(at, end)});
      at = end;
    }
    return steps;
  }

 private:
  struct Segment {
    std::uint64_t source, length, destination;
  };

  std::vector<Segment>::const_iterator first_reaching(std::uint64_t destination) const {
    return std::upper_bound(segments_.begin(), segments_.end(), destination,
                            [](std::uint64_t d, const Segment& s) { return d < s.destination + s.length; });
  }

  // The bytes of [from, to) whose source lies below `to` come first (the
  // sources rise faster than the destinations): where they end.
  std::uint64_t saved_end(std::uint64_t from, std::uint64_t to) const {
    std::uint64_t saved = from;
    for (auto s = first_reaching(from); s != segments_.end() && s->destination < to; ++s) {
      std::uint64_t gap = s->source - s->destination;
      std::uint64_t lo = std::max(from, s->destination), hi = std::min(to, s->destination + s->length);
      if (to <= gap || to - gap <= lo) break;
      saved = std::min(hi, to - gap);
      if (saved < hi) break;
    }
    return saved;
  }

  std::vector<Segment> segments_;  // in file order
};

std::uint64_t saved_length(const Step& step) { return step.saved_end - step.begin; }

std::uint64_t round_up(std::uint64_t n) { return (n + progress_block - 1) / progress_block * progress_block; }

// Version 5: what the plan expects of the mailbox (see above).
struct Bindings {
  FileId spool;
  Digest::Value before;  // [begin, end) before the first step
  Digest::Value after;   // [begin, kept_end) once every step is done
  Digest::Value tail;    // [kept_end + the marker, end): the bytes the truncate cuts
};

// Whether the mailbox holds what a journal expects there.
enum class Fit { yes, differs, unreadable };

// The journal's parts, where they are.
struct Layout {
  std::uint64_t ranges, steps, bindings, sources, checksum, saved, slot, progress, size;

  Layout(int version, const Header3& header, const std::vector<Step>& step_list) {
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
};

// Durability comes from fdatasync (the data and the size; the times need
// no flush). Large writes ask the kernel to start writing back each block
// at once, so that the disk works while the next is copied rather than
// all at the fdatasync; that promises nothing, and nothing relies on it.
bool sync(int fd) {
  if (::fdatasync(fd) == 0) return true;
  a_sync_failed = true;
  return false;
}

bool write_back(int fd, std::string_view block, std::uint64_t offset) {
  if (!sys::pwrite_all(fd, block, offset)) return false;
  ::sync_file_range(fd, static_cast<off_t>(offset), static_cast<off_t>(block.size()), SYNC_FILE_RANGE_WRITE);
  return true;
}

// Copies [from, from + length) of `in` to `to` in `out`, front to back: a
// move down within one file overwrites no byte before it was read.
bool copy(int in, std::uint64_t from, std::uint64_t length, int out, std::uint64_t to) {
  return read_blocks(in, from, length, [&](std::string_view block, std::uint64_t done) {
    return write_back(out, block, to + done);
  });
}

// Copies the kept bytes of the new file's [from, to) into place.
bool move_into_place(int fd, const Moves& moves, std::uint64_t from, std::uint64_t to) {
  return moves.pieces(from, to, [&](std::uint64_t source, std::uint64_t length, std::uint64_t destination) {
    return copy(fd, source, length, fd, destination);
  });
}

// Where a commit that was cut short goes on: from `step`; with `redo`, that
// step may have begun, and its saved bytes come from the journal.
struct Resume {
  std::size_t step = 0;
  bool redo = false;
  bool damaged = false;  // a recorded slot no longer holds what was recorded
  Digest::Value tag{};   // versions 4 and 5: the record resumed from
};

class Journal {
 public:
  Journal(int version, int fd, Header3 header, std::vector<Range> ranges, std::vector<Step> steps)
      : version_(version), fd_(fd), header_(header), ranges_(std::move(ranges)), steps_(std::move(steps)),
        moves_(ranges_, header_.end), layout_(version_, header_, steps_) {}

  // Writes the journal under a temporary name and renames it into
  // place. `named`: the journal may be in place, for the next recovery to
  // act on.
  bool create(const std::string& path, std::string& error, bool& named) {
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

  // Runs the steps from `from.step` on. With `from.redo`, that step may
  // have been cut short: its saved bytes come from the journal (its other
  // sources lie past it, untouched).
  bool run(Resume from) {
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

  // Writes the marker where the file will end, then truncates.
  bool finish(const std::string& path, bool marked) {
    if (!marked && !(sys::pwrite_all(fd_, {header_.marker.data(), marker_length(header_)}, header_.kept_end) &&
                     sync(fd_) && record(marker_index(), sum_)))
      return false;
    return ::ftruncate(fd_, static_cast<off_t>(header_.kept_end)) == 0 && sync(fd_) &&
           remove_journal(path);
  }

  // Reads and checks a journal; nullopt if it is damaged.
  static std::optional<Journal> open(int fd, int journal_fd, std::uint64_t journal_size, const Header3& header);

  // Where a commit cut short goes on. Version 3: after the steps recorded
  // done, each redone from the journal's copy. Versions 4 and 5: from the
  // step last recorded, redone from its slot; none recorded, nothing was
  // moved (a step's record is durable before it moves a byte).
  Resume resume() const {
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
  bool marked() const { return recorded(marker_index(), sum_); }
  // The marker is at the new end: the file was not truncated since.
  bool marker_in_place() const {
    std::array<char, sizeof header_.marker> found{};
    std::uint64_t n = marker_length(header_);
    return sys::pread_all(fd_, found.data(), n, header_.kept_end) &&
           std::memcmp(found.data(), header_.marker.data(), n) == 0;
  }
  void adopt(sys::UniqueFd journal_fd) { journal_fd_ = std::move(journal_fd); }

  // Version 5: what the plan expects of the mailbox, from the mailbox as it
  // is now (before the commit), in one pass over [begin, end).
  bool bind(const FileId& spool);
  bool bound() const { return version_ >= 5; }
  const Bindings& bindings() const { return bindings_; }
  // Whether the mailbox holds what the steps from `from` on expect, and
  // the stale bytes the truncate cuts: a step whose record a failed sync
  // lost may have run already. Each step's sources lie past what the steps
  // before it write, so all can be checked before the first runs.
  Fit fits_from(const Resume& from) const {
    if (from.step == steps_.size()) return fits_after();
    if (!from.redo) return matches(header_.begin, header_.end, bindings_.before);  // nothing moved yet
    Fit fit = sources_fit(from.step, true);
    for (std::size_t i = from.step + 1; i < steps_.size() && fit == Fit::yes; ++i) fit = sources_fit(i, false);
    return fit == Fit::yes ? tail_fits() : fit;
  }
  // Every step done: the kept bytes in place, the stale ones still after them.
  Fit fits_after() const {
    Fit fit = matches(header_.begin, header_.kept_end, bindings_.after);
    return fit == Fit::yes ? tail_fits() : fit;
  }
  // Before a recovery acts on a record, it writes it again and makes it
  // durable: the one it read may have come from a page whose sync failed.
  bool reaffirm(const Resume& from) {
    if (from.step == steps_.size()) return record(from.step, sum_);
    return !from.redo || record(from.step, from.tag);  // no record: nothing to write again
  }
  bool reaffirm_marker() { return record(marker_index(), sum_); }

 private:
  Fit matches(std::uint64_t begin, std::uint64_t end, const Digest::Value& expected) const {
    Digest::Value found{};
    if (!hash_range(fd_, version_, begin, end, found)) return Fit::unreadable;
    return found == expected ? Fit::yes : Fit::differs;
  }

  Fit tail_fits() const {
    return matches(header_.kept_end + marker_length(header_), header_.end, bindings_.tail);
  }

  // The bytes steps_[i] puts in place. `redo`: it may have begun, and the
  // bytes it overwrites before reading them come from its slot.
  Fit sources_fit(std::size_t i, bool redo) const {
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

  // The plan and its checksum; the slots and progress blocks are allocated
  // now, reading as zero, so that the commit never needs new space later.
  bool write_plan() {
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

  // Version 4: copies the bytes steps_[i] will overwrite before it reads
  // them into the step's slot, makes them durable, then records that.
  bool save(std::size_t i) {
    const Step& step = steps_[i];
    Checksum digest(version_);
    std::uint64_t at = saved_offset(i);
    bool ok = moves_.pieces(step.begin, step.saved_end, [&](std::uint64_t source, std::uint64_t length, auto) {
      return read_blocks(fd_, source, length, [&](std::string_view block, auto) {
        digest.update(block);
        at += block.size();
        return write_back(journal_fd_.get(), block, at - block.size());
      });
    });
    return ok && sync(journal_fd_.get()) && record(i, step_tag(digest.finish()));
  }

  std::size_t marker_index() const { return version_ == 3 ? steps_.size() : steps_.size() + 1; }

  // Version 4: a step's record names the journal and the step's saved bytes.
  Digest::Value step_tag(const Digest::Value& saved) const {
    Checksum digest(version_);
    digest.update(bytes_of(sum_));
    digest.update(bytes_of(saved));
    return digest.finish();
  }

  // Where the journal has the saved bytes of steps_[index].
  std::uint64_t saved_offset(std::size_t index) const {
    if (version_ >= 4) return layout_.saved + (index % 2) * layout_.slot;
    std::uint64_t at = layout_.saved;
    for (std::size_t i = 0; i < index; ++i) at += saved_length(steps_[i]);
    return at;
  }

  Progress progress_record(std::uint64_t index, const Digest::Value& tag) const {
    Progress progress{};
    std::memcpy(progress.magic, progress_magic, sizeof progress.magic);
    progress.index = index;
    progress.journal = tag;
    progress.check = Checksum::of(version_, bytes_of(progress).substr(0, offsetof(Progress, check)));
    return progress;
  }

  bool record(std::uint64_t index, const Digest::Value& tag) {
    return sys::pwrite_all(journal_fd_.get(), bytes_of(progress_record(index, tag)),
                          layout_.progress + index * progress_block) &&
           sync(journal_fd_.get());
  }

  // A whole record for `index` is in its block (whatever its tag).
  bool read_record(std::uint64_t index, Progress& found) const {
    if (!pread_value(journal_fd_.get(), found, layout_.progress + index * progress_block)) return false;
    Progress expected = progress_record(index, found.journal);
    return std::memcmp(&found, &expected, sizeof found) == 0;
  }

  bool recorded(std::uint64_t index, const Digest::Value& tag) const {
    Progress found;
    return read_record(index, found) && found.journal == tag;
  }

  int version_;
  int fd_;
  Header3 header_;
  std::vector<Range> ranges_;
  std::vector<Step> steps_;
  Moves moves_;
  Layout layout_;
  sys::UniqueFd journal_fd_;
  Digest::Value sum_{};
  Bindings bindings_{};                  // version 5
  std::vector<Digest::Value> sources_;  // version 5: of each step, the bytes it puts in place
};

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

// remove_ranges, also for a recovery that must remove stale bytes before new
// mail (the failed-sync flag is the caller's).
bool commit_removal(int fd, const std::vector<Range>& removed, const std::string& journal, std::string& error) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return fail(error, "cannot stat mailbox");
  std::uint64_t end = st.st_size;
  if (removed.back().end > end) {
    error = "mailbox shrank during the session";
    return false;
  }
  std::uint64_t removed_bytes = 0;
  for (const Range& range : removed) removed_bytes += range.end - range.begin;
  Header3 header{};
  std::memcpy(header.magic, magic_v5, sizeof header.magic);
  header.device = st.st_dev;
  header.inode = st.st_ino;
  header.begin = removed.front().begin;
  header.end = end;
  header.kept_end = end - removed_bytes;

  // Nothing kept after the first removed byte: one truncate does it, and a
  // truncate is atomic, so no journal is needed.
  if (header.kept_end == header.begin) {
    if (::ftruncate(fd, static_cast<off_t>(header.begin)) != 0) return fail(error, "cannot truncate mailbox");
    if (!sync(fd)) return fail(error, "cannot sync mailbox");
    return true;
  }

  // A journal another user could rename away and back would be replayed
  // over a later mailbox (recover() refuses it there too).
  std::string why;
  if (!sys::only_owner_changes_directory_of(journal, ::geteuid(), ::getegid(), why)) {
    error = "the recovery journal's directory can be changed by others: " + why;
    return false;
  }
  if (::getrandom(header.marker.data(), header.marker.size(), 0) != static_cast<ssize_t>(header.marker.size()))
    return fail(error, "cannot get random bytes");
  Moves moves(removed, end);
  std::uint64_t floor = std::clamp((header.kept_end - header.begin) / params::commit_steps, params::commit_step_floor,
                                   params::commit_step_ceiling);
  std::vector<Step> steps = moves.plan(header.begin, header.kept_end, floor);
  header.ranges = removed.size();
  header.steps = steps.size();
  Journal plan(5, fd, header, removed, std::move(steps));
  auto spool = file_id(fd);
  if (!spool || !plan.bind(*spool)) return fail(error, "cannot read mailbox");
  if (!mark_pending(fd, journal, error)) return false;
  bool named = true;
  // Once the journal is in place the commit goes through: now, or at the
  // next recovery.
  if (plan.create(journal, error, named) && plan.run({}) && plan.finish(journal, false)) {
    clear_pending(fd);
    return true;
  }
  if (!named) {
    clear_pending(fd);  // no journal: nothing took effect
    return false;
  }
  int cause = errno;
  if (a_sync_failed) mark_failed_sync(journal);
  error = "deletions may have taken effect, but the disk did not confirm them (" + sys::error_text(cause) + "); " +
          (a_sync_failed ? "the next session after a restart completes them" : "the next session completes them");
  return false;
}

// A journal that names another mailbox file, or expects other bytes than
// the mailbox holds, is left alone, and so is the mailbox.
RecoveryResult does_not_fit(const std::string& path, const std::string& what) {
  return {false,
          "recovery journal " + path + " does not fit the mailbox (" + what + "); not applied, left alone: see "
          "RECOVERY in popd(8)",
          "Recovery journal does not fit the mailbox"};
}

// What a failed check of a bound journal means.
RecoveryResult refused(Fit fit, const std::string& path, const std::string& what) {
  if (a_sync_failed || fit == Fit::unreadable)
    return {false, "cannot check recovery journal " + path + " against the mailbox: " + sys::error_text(errno)};
  return does_not_fit(path, what);
}

RecoveryResult recover_rolled_forward(int fd, sys::UniqueFd journal_fd, const std::string& path,
                                      std::uint64_t journal_size) {
  Header3 header{};
  std::optional<Journal> journal;
  if (pread_value(journal_fd.get(), header, 0))
    journal = Journal::open(fd, journal_fd.get(), journal_size, header);
  // A journal gets its name only once it is durable, so this one was
  // damaged afterwards; without it a half-moved mailbox cannot be put
  // right. Touch nothing and let an administrator look.
  std::string damaged = "recovery journal " + path + " is damaged; mailbox left alone";
  if (!journal) return {false, damaged};
  auto now = file_id(fd);
  if (journal->bound() ? !now || !same_file_id(journal->bindings().spool, *now)
                       : !same_file(fd, header.device, header.inode))
    return does_not_fit(path, "another file");
  journal->adopt(std::move(journal_fd));
  struct stat st;
  if (::fstat(fd, &st) != 0) return {false, "cannot stat mailbox: " + sys::error_text(errno)};
  std::uint64_t size = st.st_size;
  auto cannot_complete = [] { return RecoveryResult{false, "cannot complete an interrupted commit: " + sys::error_text(errno)}; };
  auto drop_journal = [&](const std::string& done) {
    if (!remove_journal(path)) return RecoveryResult{false, "cannot remove recovery journal " + path};
    clear_pending(fd);
    return RecoveryResult{true, done};
  };

  bool marked = journal->marked();
  if (marked && !journal->marker_in_place())  // every step done, the marker since cut or overwritten
    return drop_journal("completed an interrupted commit");
  if (size < header.end) return does_not_fit(path, "the mailbox is shorter than the plan");
  if (!marked) {
    Resume from = journal->resume();
    if (from.damaged) return {false, damaged};
    if (journal->bound()) {
      // Its record written again and durable first.
      Fit fit = journal->reaffirm(from) ? journal->fits_from(from) : Fit::unreadable;
      if (fit == Fit::differs && from.step == 0 && !from.redo)
        return drop_journal("an interrupted commit had moved nothing and the mailbox was changed since; "
                            "no deletion took effect");
      if (fit != Fit::yes) return refused(fit, path, "it holds other bytes than the plan expects");
    }
    if (!journal->run(from)) return cannot_complete();
  } else if (journal->bound()) {
    Fit fit = journal->reaffirm_marker() ? journal->fits_after() : Fit::unreadable;
    if (fit != Fit::yes) return refused(fit, path, "the kept mail or the bytes to cut differ");
  }
  if (size > header.end) {
    // Mail delivered after the crash follows the stale bytes: remove them
    // by a commit of their own, whose journal replaces this one.
    std::string error;
    if (!commit_removal(fd, {{header.kept_end, header.end}}, path, error))
      return {false, "cannot complete an interrupted commit: " + error};
    return {true, "completed an interrupted commit; mail delivered since is kept"};
  }
  if (!journal->finish(path, marked)) return cannot_complete();
  clear_pending(fd);
  return {true, "completed an interrupted commit"};
}

// --- versions 1 and 2: journals of an older popd, rolled back ---------------
//
// Header, the original bytes of [begin, kept_end), a checksum of both;
// once the rewrite was durable, a Trailer.

constexpr char header_magic_v1[16] = "popd-journal-1\n";
constexpr char header_magic_v2[16] = "popd-journal-2\n";
constexpr char trailer_magic[16] = "popd-rewritten\n";

struct Header {
  char magic[16];
  std::uint64_t device, inode;
  std::uint64_t begin;     // first byte rewritten
  std::uint64_t kept_end;  // end of the rewritten data: the new file size
  std::uint64_t end;       // the file size before the rewrite
};

struct Trailer {
  char magic[16];
  std::uint64_t kept_end, end;
  Digest::Value stale;  // checksum of [kept_end, end) before the truncate
  Digest::Value check;  // checksum of the fields above
};

// Puts the journal's original bytes back (idempotent) and drops the
// journal. Mail appended after the original end is not touched.
RecoveryResult roll_back(int fd, int journal_fd, const Header& header, const std::string& journal) {
  if (!copy(journal_fd, sizeof header, header.kept_end - header.begin, fd, header.begin) || !sync(fd) ||
      !remove_journal(journal))
    return {false, "cannot roll back an interrupted commit: " + sys::error_text(errno)};
  return {true, "rolled back an interrupted commit; no deletion took effect"};
}

RecoveryResult recover_old(int fd, int journal_fd, const std::string& journal, std::uint64_t journal_size,
                           int version, const Header& header) {
  std::uint64_t backup_end = sizeof header + (header.kept_end - header.begin);
  Digest::Value stored{}, computed{};
  bool complete = header.begin <= header.kept_end && header.kept_end <= header.end &&
                  journal_size >= backup_end + sizeof stored &&
                  hash_range(journal_fd, version, 0, backup_end, computed);
  if (!complete || !pread_value(journal_fd, stored, backup_end) || stored != computed)
    return {false, "recovery journal " + journal + " is damaged; mailbox left alone"};
  if (!same_file(fd, header.device, header.inode)) return does_not_fit(journal, "another file");

  Trailer trailer{};
  bool rewritten = pread_value(journal_fd, trailer, backup_end + sizeof stored) &&
                   std::memcmp(trailer.magic, trailer_magic, sizeof trailer.magic) == 0 &&
                   trailer.check == Checksum::of(version, bytes_of(trailer).substr(0, offsetof(Trailer, check))) &&
                   trailer.kept_end == header.kept_end && trailer.end == header.end;
  if (!rewritten) return roll_back(fd, journal_fd, header, journal);
  // Before the truncate, rolling back is always possible; after it, the
  // commit is complete. It happened if [kept_end, end) no longer holds the
  // stale bytes.
  struct stat st;
  if (::fstat(fd, &st) != 0) return {false, "cannot stat mailbox: " + sys::error_text(errno)};
  bool truncated = static_cast<std::uint64_t>(st.st_size) < header.end;
  if (!truncated) {
    Digest::Value now{};
    if (!hash_range(fd, version, header.kept_end, header.end, now))
      return {false, "cannot read mailbox: " + sys::error_text(errno)};
    truncated = now != trailer.stale;
  }
  if (!truncated) return roll_back(fd, journal_fd, header, journal);
  if (!remove_journal(journal)) return {false, "cannot remove recovery journal " + journal};
  return {true, "completed an interrupted commit"};
}

}  // namespace

bool remove_ranges(int fd, const std::vector<Range>& removed, const std::string& journal, std::string& error) {
  if (removed.empty()) return true;
  SignalsDeferred deferred;
  a_sync_failed = false;
  return commit_removal(fd, removed, journal, error);
}

RecoveryResult recover(int fd, const std::string& journal) {
  // Where others may write beside it, a journal another user planted
  // could write anything into this mailbox: only the user's own is read.
  sys::OwnFile file = sys::open_own_file(journal, O_RDWR, ::geteuid());
  auto unknown = [&](const std::string& why) {
    return RecoveryResult{false, "cannot tell whether a commit was cut short: " + why,
                          "Mailbox cannot be checked for an interrupted commit, try again later"};
  };
  if (!file.fd && file.refused.empty() && file.error == ENOENT) {
    // No journal, or none to be seen: a home that is not there (NFS or
    // autofs down), or an empty mount point in its place, may hold one.
    struct stat directory;
    bool found = ::stat(sys::directory_of(journal).c_str(), &directory) == 0;
    if (!found || !S_ISDIR(directory.st_mode))
      return unknown("the directory of recovery journal " + journal + " is not there (" +
                     sys::error_text(found ? ENOTDIR : errno) + ")");
    if (auto elsewhere = pending_elsewhere(fd, journal)) return *elsewhere;
    return {};
  }
  if (!file.fd && file.refused.empty())
    return unknown("cannot open recovery journal " + journal + ": " + sys::error_text(file.error));
  if (auto held = held_by_failed_sync(journal)) return *held;
  // Nor one from where another user could have put back an old one of the
  // user's own, which names this very mailbox but not its present bytes.
  std::string why;
  if (!sys::only_owner_changes_directory_of(journal, ::geteuid(), ::getegid(), why))
    return {false, "recovery journal " + journal + " is where others can change it (" + why + "); not applied",
            "Recovery journal is where others can change it"};
  if (!file.fd)
    return {false, "recovery journal " + journal + " " + file.refused + "; not applied, mailbox left alone",
            "Recovery journal is not the user's own file"};
  sys::UniqueFd journal_fd = std::move(file.fd);
  SignalsDeferred deferred;
  struct stat journal_st;
  if (::fstat(journal_fd.get(), &journal_st) != 0)
    return {false, "cannot stat recovery journal " + journal + ": " + sys::error_text(errno)};
  Header header{};
  if (!pread_value(journal_fd.get(), header, 0))
    return {false, "recovery journal " + journal + " is damaged; mailbox left alone"};
  std::uint64_t size = journal_st.st_size;
  if (std::memcmp(header.magic, magic_v3, sizeof header.magic) == 0 ||
      std::memcmp(header.magic, magic_v4, sizeof header.magic) == 0 ||
      std::memcmp(header.magic, magic_v5, sizeof header.magic) == 0) {
    a_sync_failed = false;
    RecoveryResult result = recover_rolled_forward(fd, std::move(journal_fd), journal, size);
    if (!result.ok && a_sync_failed) mark_failed_sync(journal);
    return result;
  }
  int version = std::memcmp(header.magic, header_magic_v1, sizeof header.magic) == 0   ? 1
                : std::memcmp(header.magic, header_magic_v2, sizeof header.magic) == 0 ? 2
                                                                                       : 0;
  if (version == 0) return {false, "recovery journal " + journal + " is damaged; mailbox left alone"};
  return recover_old(fd, journal_fd.get(), journal, size, version, header);
}

}  // namespace popd::mailbox
