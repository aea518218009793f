#include "mailbox/maildir/listing.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <ctime>
#include <memory>
#include <tuple>

#include "params.h"
#include "sys/fd.h"

namespace popd::mailbox::maildir {
namespace {

std::optional<std::uint64_t> number_at(std::string_view text) {
  std::uint64_t value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end == text.data()) return std::nullopt;
  return value;
}

// The change time of new/ and cur/: any rename into, out of or within a
// directory moves it.
using Times = std::tuple<std::int64_t, std::int64_t, std::int64_t, std::int64_t>;

std::optional<Times> change_times(int maildir_fd) {
  struct stat new_st, cur_st;
  if (::fstatat(maildir_fd, "new", &new_st, AT_SYMLINK_NOFOLLOW) != 0 ||
      ::fstatat(maildir_fd, "cur", &cur_st, AT_SYMLINK_NOFOLLOW) != 0)
    return std::nullopt;
  return Times{new_st.st_ctim.tv_sec, new_st.st_ctim.tv_nsec, cur_st.st_ctim.tv_sec, cur_st.st_ctim.tv_nsec};
}

// Changed within a second of now: a rename in the same timestamp tick as
// the scan could leave the time as it was.
bool recent(const Times& times) {
  std::time_t now = std::time(nullptr);
  return now - std::get<0>(times) <= 1 || now - std::get<2>(times) <= 1;
}

struct CloseDir {
  void operator()(DIR* dir) const { ::closedir(dir); }
};

// A name a Maildir message can have: no control characters (a line of
// popd's journal and sizes file holds one name) and not hidden.
bool message_name(std::string_view name) {
  if (name.empty() || name[0] == '.') return false;  // ".", "..", and hidden files, as Maildir readers skip them
  for (char c : name)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return false;
  return true;
}

bool list_folder(int maildir_fd, Folder folder, Listing& listing, std::string& skipped) {
  int fd = ::openat(maildir_fd, folder_name(folder), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return false;
  struct stat st;
  if (::fstat(fd, &st) == 0) listing.expect(static_cast<std::size_t>(st.st_size));  // a directory's size: about its names'
  std::unique_ptr<DIR, CloseDir> dir(::fdopendir(fd));
  if (!dir) {
    ::close(fd);
    return false;
  }
  errno = 0;
  while (struct dirent* entry = ::readdir(dir.get())) {
    std::string_view name = entry->d_name;
    unsigned char type = entry->d_type;
    if (type == DT_UNKNOWN) {  // some file systems do not say: ask
      struct stat file;
      type = ::fstatat(fd, entry->d_name, &file, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(file.st_mode) ? DT_REG : DT_LNK;
    }
    if (type != DT_REG || !message_name(name)) {
      if (name[0] != '.' && skipped.size() < params::maildir_skipped_note)
        skipped += std::string(folder_name(folder)) + "/" + std::string(name) + " ";
      continue;
    }
    listing.add(folder, name);
  }
  return errno == 0;
}

bool scan_once(int maildir_fd, Listing& listing, std::string& skipped) {
  listing = Listing();
  skipped.clear();
  // new/ first: a message moved to cur/ meanwhile is then seen twice
  // (kept once), never missed.
  if (!list_folder(maildir_fd, Folder::new_mail, listing, skipped) ||
      !list_folder(maildir_fd, Folder::current, listing, skipped))
    return false;
  listing.finish();
  return true;
}

}  // namespace

Name parse_name(std::string_view name) {
  Name parsed;
  parsed.base = name.substr(0, name.find(':'));
  if (auto time = number_at(parsed.base)) parsed.delivered = *time;
  // The fields after the unique part: ",S=1234,W=1260".
  for (std::size_t at = parsed.base.find(','); at != std::string_view::npos; at = parsed.base.find(',', at + 1)) {
    std::string_view field = parsed.base.substr(at + 1);
    if (field.starts_with("W=")) parsed.wire_size = number_at(field.substr(2));
  }
  return parsed;
}

const char* folder_name(Folder folder) { return folder == Folder::new_mail ? "new" : "cur"; }

void Listing::add(Folder folder, std::string_view name) {
  Name parsed = parse_name(name);
  Entry entry;
  entry.name_at = static_cast<std::uint32_t>(names_.size());
  entry.name_length = static_cast<std::uint32_t>(name.size());
  entry.base_length = static_cast<std::uint32_t>(parsed.base.size());
  entry.folder = folder;
  entry.sort_key = parsed.delivered;
  entry.sized = parsed.wire_size.has_value();
  entry.size = parsed.wire_size.value_or(0);
  names_ += name;
  entries_.push_back(entry);
}

void Listing::expect(std::size_t name_bytes) {
  // A directory takes at least 16 bytes a name on local file systems
  // (ext4: 8 and the name), so the entries of one folder do not move while
  // it is listed (a move holds them twice for a moment); room never used
  // is never touched, and costs no memory.
  name_bytes = std::min<std::size_t>(name_bytes, params::maildir_list_limit);  // a file system's size may lie
  names_.reserve(names_.size() + name_bytes);
  entries_.reserve(entries_.size() + name_bytes / 16);
}

void Listing::rename(Entry& entry, Folder folder, std::string_view name) {
  entry.folder = folder;
  if (name.size() <= entry.name_length) {  // flags changed: in place, so that names_ does not grow
    names_.replace(entry.name_at, name.size(), name);
  } else {
    entry.name_at = static_cast<std::uint32_t>(names_.size());
    names_ += name;
  }
  entry.name_length = static_cast<std::uint32_t>(name.size());
}

void Listing::set_old_id(Entry& entry, std::string_view id, std::uint64_t order) {
  entry.old_id_at = static_cast<std::uint32_t>(names_.size());
  entry.old_id_length = static_cast<std::uint32_t>(id.size());
  entry.sort_key = order;
  names_ += id;
}

void Listing::order_by_old_ids() {
  std::stable_sort(entries_.begin(), entries_.end(), [](const Entry& a, const Entry& b) {
    if ((a.old_id_length > 0) != (b.old_id_length > 0)) return a.old_id_length > 0;
    return a.old_id_length > 0 && a.sort_key < b.sort_key;
  });
}

void Listing::remove(const std::vector<bool>& removed) {
  std::size_t kept = 0;
  for (std::size_t i = 0; i < entries_.size(); ++i)
    if (!removed[i]) entries_[kept++] = entries_[i];
  entries_.resize(kept);
}

void Listing::finish() {
  auto order = [&](const Entry& a, const Entry& b) {
    if (a.sort_key != b.sort_key) return a.sort_key < b.sort_key;
    if (base(a) != base(b)) return base(a) < base(b);
    return a.folder == Folder::current && b.folder != Folder::current;  // cur/'s first: the one kept
  };
  std::sort(entries_.begin(), entries_.end(), order);
  entries_.erase(std::unique(entries_.begin(), entries_.end(),
                             [&](const Entry& a, const Entry& b) { return base(a) == base(b); }),
                 entries_.end());
}

bool Listing::same_messages(const Listing& other) const {
  if (size() != other.size()) return false;
  for (std::size_t i = 0; i < size(); ++i)
    if (base(entries_[i]) != other.base(other.entries_[i])) return false;
  return true;
}

bool scan(int maildir_fd, Listing& listing, std::string& skipped) {
  Listing previous;
  for (int attempt = 0; attempt < params::maildir_scans; ++attempt) {
    auto before = change_times(maildir_fd);
    if (!before || !scan_once(maildir_fd, listing, skipped)) return false;
    auto after = change_times(maildir_fd);
    if (!after) return false;
    if ((*before == *after && !recent(*after)) || (attempt > 0 && listing.same_messages(previous))) return true;
    previous = std::move(listing);
  }
  listing = std::move(previous);  // still changing: what the last scan saw
  return true;
}

}  // namespace popd::mailbox::maildir
