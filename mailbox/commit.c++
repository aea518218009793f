#include "mailbox/commit.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <memory>
#include <optional>

#include <xxhash.h>

#include "io/fd.h"
#include "io/file.h"
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
  Digest::Value finish() {
    if (version_ == 1) return sha256_.finish();
    XXH128_canonical_t canonical;
    XXH128_canonicalFromHash(&canonical, XXH3_128bits_digest(state_.get()));
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
  return io::pread_all(fd, reinterpret_cast<char*>(&value), sizeof value, offset);
}

// Reads [from, from + length) of fd in blocks, front to back, and hands
// each to sink(block, offset in the range); false as soon as either fails.
template <typename Sink>
bool read_blocks(int fd, std::uint64_t from, std::uint64_t length, Sink&& sink) {
  std::size_t size = std::min<std::uint64_t>(length, params::read_block);
  std::unique_ptr<char[]> buffer(new char[size]);  // not zeroed: only what was read is used
  for (std::uint64_t done = 0; done < length;) {
    std::size_t n = std::min<std::uint64_t>(size, length - done);
    if (!io::pread_all(fd, buffer.get(), n, from + done) || !sink(std::string_view(buffer.get(), n), done))
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
  error = std::string(what) + ": " + io::error_text(errno);
  return false;
}

bool remove_journal(const std::string& journal) {
  return ::unlink(journal.c_str()) == 0 && io::sync_directory_of(journal);
}

bool same_file(int fd, std::uint64_t device, std::uint64_t inode) {
  struct stat st;
  return ::fstat(fd, &st) == 0 && static_cast<std::uint64_t>(st.st_dev) == device &&
         static_cast<std::uint64_t>(st.st_ino) == inode;
}

// A sound journal of another file (the mailbox was replaced) is kept for
// the administrator, out of the way.
RecoveryResult set_aside(const std::string& journal) {
  std::string aside = journal + ".orphan." + std::to_string(std::time(nullptr));
  if (::rename(journal.c_str(), aside.c_str()) != 0) return {false, "cannot set aside journal " + journal};
  return {true, "recovery journal belongs to another mailbox file; moved to " + aside};
}

// --- versions 3 and 4: rolled forward ---------------------------------------
//
// Version 4, this popd's (host byte order; it never leaves the host): a
// Header3, the removed Ranges, the Steps, and a checksum of these. From the
// next block boundary, two slots, each as large as the most one step saves,
// which take turns holding the saved bytes of the step at hand, so that the
// journal stays small however much is moved. Then one block per step, one
// for the end of the moves and one for the marker, zero until a Progress
// record is written there: each in a block of its own, so that a torn write
// of one cannot spoil another.
//
// Version 3 (an older popd's, only ever recovered): the same, but the saved
// bytes of every step follow the Steps, in order, all before the checksum,
// no slots, and no block for the end of the moves.

constexpr char magic_v3[16] = "popd-journal-3\n";
constexpr char magic_v4[16] = "popd-journal-4\n";
constexpr char progress_magic[16] = "popd-progress\n";
constexpr std::uint64_t progress_block = 4096;

struct Header3 {
  char magic[16];
  std::uint64_t device, inode;
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

// The journal's parts, where they are.
struct Layout {
  std::uint64_t ranges, steps, checksum, saved, slot, progress, size;

  Layout(int version, const Header3& header, const std::vector<Step>& step_list) {
    ranges = sizeof header;
    steps = ranges + header.ranges * sizeof(Range);
    std::uint64_t after_steps = steps + header.steps * sizeof(Step);
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
bool sync(int fd) { return ::fdatasync(fd) == 0; }

bool write_back(int fd, std::string_view block, std::uint64_t offset) {
  if (!io::pwrite_all(fd, block, offset)) return false;
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
};

class Journal {
 public:
  Journal(int version, int fd, Header3 header, std::vector<Range> ranges, std::vector<Step> steps)
      : version_(version), fd_(fd), header_(header), ranges_(std::move(ranges)), steps_(std::move(steps)),
        moves_(ranges_, header_.end), layout_(version_, header_, steps_) {}

  // Writes a version 4 journal under a temporary name and renames it into
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
    if (!io::sync_directory_of(path)) {
      fail(error, "cannot sync the directory of recovery journal " + path);
      named = !remove_journal(path);
      return false;
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
      } else if (version_ == 4 && !save(i)) {
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
    if (!marked && !(io::pwrite_all(fd_, {header_.marker.data(), marker_length(header_)}, header_.kept_end) &&
                     sync(fd_) && record(marker_index(), sum_)))
      return false;
    return ::ftruncate(fd_, static_cast<off_t>(header_.kept_end)) == 0 && sync(fd_) &&
           remove_journal(path);
  }

  // Reads and checks a journal; nullopt if it is damaged.
  static std::optional<Journal> open(int fd, int journal_fd, std::uint64_t journal_size, const Header3& header);

  // Where a commit cut short goes on. Version 3: after the steps recorded
  // done, each redone from the journal's copy. Version 4: from the step
  // last recorded, redone from its slot; none recorded, nothing was moved.
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
      return {i, true, !sound};
    }
    return {0, false};
  }
  bool marked() const { return recorded(marker_index(), sum_); }
  // The marker is at the new end: the file was not truncated since.
  bool marker_in_place() const {
    std::array<char, sizeof header_.marker> found{};
    std::uint64_t n = marker_length(header_);
    return io::pread_all(fd_, found.data(), n, header_.kept_end) &&
           std::memcmp(found.data(), header_.marker.data(), n) == 0;
  }
  void adopt(io::UniqueFd journal_fd) { journal_fd_ = std::move(journal_fd); }

 private:
  // The plan and its checksum; the slots and progress blocks are allocated
  // now, reading as zero, so that the commit never needs new space later.
  bool write_plan() {
    Checksum digest(version_);
    std::uint64_t at = 0;
    auto put = [&](std::string_view bytes) {
      digest.update(bytes);
      at += bytes.size();
      return io::pwrite_all(journal_fd_.get(), bytes, at - bytes.size());
    };
    if (!put(bytes_of(header_)) ||
        !put({reinterpret_cast<const char*>(ranges_.data()), ranges_.size() * sizeof(Range)}) ||
        !put({reinterpret_cast<const char*>(steps_.data()), steps_.size() * sizeof(Step)}))
      return false;
    sum_ = digest.finish();
    if (!io::pwrite_all(journal_fd_.get(), bytes_of(sum_), at)) return false;
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
    if (version_ == 4) return layout_.saved + (index % 2) * layout_.slot;
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
    return io::pwrite_all(journal_fd_.get(), bytes_of(progress_record(index, tag)),
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
  io::UniqueFd journal_fd_;
  Digest::Value sum_{};
};

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
  int version = std::memcmp(header.magic, magic_v3, sizeof header.magic) == 0 ? 3 : 4;
  // Counts bounded by the journal's size before anything is allocated.
  if (header.kept_end < header.begin || header.end <= header.kept_end ||
      header.ranges > journal_size / sizeof(Range) || header.steps > journal_size / sizeof(Step))
    return std::nullopt;
  std::vector<Range> ranges(header.ranges);
  std::vector<Step> steps(header.steps);
  std::uint64_t at = sizeof header;
  if (!io::pread_all(journal_fd, reinterpret_cast<char*>(ranges.data()), ranges.size() * sizeof(Range), at) ||
      !io::pread_all(journal_fd, reinterpret_cast<char*>(steps.data()), steps.size() * sizeof(Step),
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
  return journal;
}

RecoveryResult recover_rolled_forward(int fd, io::UniqueFd journal_fd, const std::string& path,
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
  if (!same_file(fd, header.device, header.inode)) return set_aside(path);
  journal->adopt(std::move(journal_fd));
  struct stat st;
  if (::fstat(fd, &st) != 0) return {false, "cannot stat mailbox: " + io::error_text(errno)};
  std::uint64_t size = st.st_size;

  bool marked = journal->marked();
  if (marked && !journal->marker_in_place()) {
    // Truncated (and perhaps delivered to since): complete.
    if (!remove_journal(path)) return {false, "cannot remove recovery journal " + path};
    return {true, "completed an interrupted commit"};
  }
  if (!marked) {
    if (size < header.end) return {false, "mailbox is shorter than its recovery journal says; left alone"};
    Resume from = journal->resume();
    if (from.damaged) return {false, damaged};
    if (!journal->run(from)) return {false, "cannot complete an interrupted commit: " + io::error_text(errno)};
  }
  if (size > header.end) {
    // Mail delivered after the crash follows the stale bytes: remove them
    // by a commit of their own, whose journal replaces this one.
    std::string error;
    if (!remove_ranges(fd, {{header.kept_end, header.end}}, path, error))
      return {false, "cannot complete an interrupted commit: " + error};
    return {true, "completed an interrupted commit; mail delivered since is kept"};
  }
  if (!journal->finish(path, marked))
    return {false, "cannot complete an interrupted commit: " + io::error_text(errno)};
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
    return {false, "cannot roll back an interrupted commit: " + io::error_text(errno)};
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
  if (!same_file(fd, header.device, header.inode)) return set_aside(journal);

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
  if (::fstat(fd, &st) != 0) return {false, "cannot stat mailbox: " + io::error_text(errno)};
  bool truncated = static_cast<std::uint64_t>(st.st_size) < header.end;
  if (!truncated) {
    Digest::Value now{};
    if (!hash_range(fd, version, header.kept_end, header.end, now))
      return {false, "cannot read mailbox: " + io::error_text(errno)};
    truncated = now != trailer.stale;
  }
  if (!truncated) return roll_back(fd, journal_fd, header, journal);
  if (!remove_journal(journal)) return {false, "cannot remove recovery journal " + journal};
  return {true, "completed an interrupted commit"};
}

}  // namespace

bool remove_ranges(int fd, const std::vector<Range>& removed, const std::string& journal,
                   std::string& error) {
  if (removed.empty()) return true;
  SignalsDeferred deferred;
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
  std::memcpy(header.magic, magic_v4, sizeof header.magic);
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
  if (!io::only_owner_changes_directory_of(journal, ::geteuid(), ::getegid(), why)) {
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
  Journal plan(4, fd, header, removed, std::move(steps));
  bool named = true;
  // Once the journal is in place the commit goes through: now, or at the
  // next recovery.
  if (plan.create(journal, error, named) && plan.run({}) && plan.finish(journal, false)) return true;
  if (named)
    error = "deletions may have taken effect, but the disk did not confirm them (" + io::error_text(errno) +
            "); the next session completes them";
  return false;
}

RecoveryResult recover(int fd, const std::string& journal) {
  // Where others may write beside it, a journal another user planted
  // could write anything into this mailbox: only the user's own is read.
  io::OwnFile file = io::open_own_file(journal, O_RDWR, ::geteuid());
  if (!file.fd && file.refused.empty() && file.error == ENOENT) return {};
  // Nor one from where another user could have put back an old one of the
  // user's own, which names this very mailbox but not its present bytes.
  std::string why;
  if (!io::only_owner_changes_directory_of(journal, ::geteuid(), ::getegid(), why))
    return {false, "recovery journal " + journal + " is where others can change it (" + why + "); not applied",
            "Recovery journal is where others can change it"};
  if (!file.refused.empty())
    return {false, "recovery journal " + journal + " " + file.refused + "; not applied, mailbox left alone",
            "Recovery journal is not the user's own file"};
  if (!file.fd) return {false, "cannot open recovery journal " + journal + ": " + io::error_text(file.error)};
  io::UniqueFd journal_fd = std::move(file.fd);
  SignalsDeferred deferred;
  struct stat journal_st;
  if (::fstat(journal_fd.get(), &journal_st) != 0)
    return {false, "cannot stat recovery journal " + journal + ": " + io::error_text(errno)};
  Header header{};
  if (!pread_value(journal_fd.get(), header, 0))
    return {false, "recovery journal " + journal + " is damaged; mailbox left alone"};
  std::uint64_t size = journal_st.st_size;
  if (std::memcmp(header.magic, magic_v3, sizeof header.magic) == 0 ||
      std::memcmp(header.magic, magic_v4, sizeof header.magic) == 0)
    return recover_rolled_forward(fd, std::move(journal_fd), journal, size);
  int version = std::memcmp(header.magic, header_magic_v1, sizeof header.magic) == 0   ? 1
                : std::memcmp(header.magic, header_magic_v2, sizeof header.magic) == 0 ? 2
                                                                                       : 0;
  if (version == 0) return {false, "recovery journal " + journal + " is damaged; mailbox left alone"};
  return recover_old(fd, journal_fd.get(), journal, size, version, header);
}

}  // namespace popd::mailbox
