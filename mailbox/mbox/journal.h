// The recovery journal of an in-place commit (commit.h): its format, the
// plan of moves it records, and what a commit and a recovery share. Used by
// commit.c++, recovery.c++ and journal.c++ only.
#pragma once

#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <xxhash.h>

#include "mailbox/mbox/range.h"
#include "mailbox/digest.h"
#include "params.h"
#include "sys/fd.h"
#include "sys/file.h"

namespace popd::mailbox::journal {

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

inline std::string_view bytes_of(const auto& value) {
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
bool hash_range(int fd, int version, std::uint64_t begin, std::uint64_t end, Digest::Value& value);

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

// Sets `error` to `what` and errno's text; false.
bool fail(std::string& error, std::string_view what);
// Removes the journal and makes that durable.
bool remove_journal(const std::string& journal);
// The journals of an older popd name the mailbox by st_dev and inode.
bool same_file(int fd, std::uint64_t device, std::uint64_t inode);

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

std::optional<FileId> file_id(int fd);
bool same_file_id(const FileId& recorded, const FileId& now);

// After a failed fsync the kernel may have marked the pages clean without
// writing them: what this boot reads back is not what the disk holds
// (the "fsyncgate" lesson). Where a commit or a recovery met one, this
// file beside the journal holds the boot's id, and no journal is acted on
// until the system has restarted (or an administrator removes the file).
std::string failed_sync_marker(const std::string& journal);
// Where the marker cannot be written, an empty file whose name holds the
// boot's id says the same: making it needs no data written.
std::string failed_sync_marker_of_this_boot(const std::string& journal);
// A sync failed since the last reset (remove_ranges and recover reset it):
// the journal left behind gets the marker.
extern bool a_sync_failed;
void mark_failed_sync(const std::string& journal);
std::string this_boot();

// While a commit may be under way, the mailbox carries this extended
// attribute: the FileId of the journal's directory. A login that finds no
// journal where the directory is another one (a home that is a mount point
// while it is not mounted: NFS, autofs, pam_mount) knows the journal is
// elsewhere, not that there is none. Where the file system keeps no user
// attributes, a commit goes without it.
inline constexpr char pending_attribute[] = "user.popd.journal";
std::optional<FileId> directory_id(const std::string& journal);
bool mark_pending(int fd, const std::string& journal, std::string& error);
void clear_pending(int fd);

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

inline std::uint64_t marker_length(const Header3& header) {
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

  // Steps of the bytes removed before them, which cannot overwrite their
  // own sources, where those are at least params::commit_gap_without_copy;
  // else of at least `floor` bytes.
  std::vector<Step> plan(std::uint64_t begin, std::uint64_t kept_end, std::uint64_t floor) const {
    std::vector<Step> steps;
    for (std::uint64_t at = begin; at < kept_end;) {
      std::uint64_t gap = first_reaching(at)->source - first_reaching(at)->destination;
      std::uint64_t length = gap >= params::commit_gap_without_copy ? gap : std::max(gap, floor);
      std::uint64_t end = std::min(kept_end, at + length);
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

inline std::uint64_t saved_length(const Step& step) { return step.saved_end - step.begin; }

inline std::uint64_t round_up(std::uint64_t n) { return (n + progress_block - 1) / progress_block * progress_block; }

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

  Layout(int version, const Header3& header, const std::vector<Step>& step_list);
};

// Durability comes from fdatasync (the data and the size); a failure sets
// a_sync_failed.
bool sync(int fd);
// Copies [from, from + length) of `in` to `to` in `out`, front to back: a
// move down within one file overwrites no byte before it was read.
bool copy(int in, std::uint64_t from, std::uint64_t length, int out, std::uint64_t to);
// Copies the kept bytes of the new file's [from, to) into place.
bool move_into_place(int fd, const Moves& moves, std::uint64_t from, std::uint64_t to);

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
  bool create(const std::string& path, std::string& error, bool& named);

  // Runs the steps from `from.step` on. With `from.redo`, that step may
  // have been cut short: its saved bytes come from the journal (its other
  // sources lie past it, untouched).
  bool run(Resume from);

  // Writes the marker where the file will end, then truncates.
  bool finish(const std::string& path, bool marked);

  // Reads and checks a journal; nullopt if it is damaged.
  static std::optional<Journal> open(int fd, int journal_fd, std::uint64_t journal_size, const Header3& header);

  // Where a commit cut short goes on. Version 3: after the steps recorded
  // done, each redone from the journal's copy. Versions 4 and 5: from the
  // step last recorded, redone from its slot; none recorded, nothing was
  // moved (a step's record is durable before it moves a byte).
  Resume resume() const;
  bool marked() const { return recorded(marker_index(), sum_); }
  // The marker is at the new end: the file was not truncated since.
  bool marker_in_place() const;
  // A record or the marker could not be read (EIO): what the journal says
  // is not known, and nothing may be concluded from a record not found.
  bool unreadable() const { return unreadable_; }
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
  Fit fits_from(const Resume& from) const;
  // Every step done: the kept bytes in place, the stale ones still after them.
  Fit fits_after() const;
  // Before a recovery acts on a record, it writes it again and makes it
  // durable: the one it read may have come from a page whose sync failed.
  bool reaffirm(const Resume& from);
  bool reaffirm_marker() { return record(marker_index(), sum_); }

 private:
  Fit matches(std::uint64_t begin, std::uint64_t end, const Digest::Value& expected) const;

  Fit tail_fits() const;

  // The bytes steps_[i] puts in place. `redo`: it may have begun, and the
  // bytes it overwrites before reading them come from its slot.
  Fit sources_fit(std::size_t i, bool redo) const;

  // The plan and its checksum; the slots and progress blocks are allocated
  // now, reading as zero, so that the commit never needs new space later.
  bool write_plan();

  // Version 4: copies the bytes steps_[i] will overwrite before it reads
  // them into the step's slot, makes them durable, then records that.
  bool save(std::size_t i);

  std::size_t marker_index() const { return version_ == 3 ? steps_.size() : steps_.size() + 1; }

  // Version 4: a step's record names the journal and the step's saved bytes.
  Digest::Value step_tag(const Digest::Value& saved) const;

  // Where the journal has the saved bytes of steps_[index].
  std::uint64_t saved_offset(std::size_t index) const;

  Progress progress_record(std::uint64_t index, const Digest::Value& tag) const;

  bool record(std::uint64_t index, const Digest::Value& tag);

  // A whole record for `index` is in its block (whatever its tag).
  bool read_record(std::uint64_t index, Progress& found) const;

  bool recorded(std::uint64_t index, const Digest::Value& tag) const;

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
  mutable bool unreadable_ = false;
};

// The plan must describe a commit popd could have made of this header.
bool plausible(const Header3& header, const std::vector<Range>& ranges, const std::vector<Step>& steps);

// remove_ranges, also for a recovery that must remove stale bytes before new
// mail (the failed-sync flag is the caller's).
bool commit_removal(int fd, const std::vector<Range>& removed, const std::string& journal, std::string& error);

}  // namespace popd::mailbox::journal
