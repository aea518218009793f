// The messages of a Maildir's new/ and cur/: their names, read from the
// directories alone (no message is opened), in a stable order.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace popd::mailbox::maildir {

// What a Maildir file name says: "TIME.UNIQUE.HOST[,S=n][,W=n][:2,FLAGS]".
// The base name (before ':') never changes while the message lives; the
// flags after it do, by rename.
struct Name {
  std::string_view base;
  std::optional<std::uint64_t> wire_size;  // ,W=: the size with CRLF line ends
  std::uint64_t delivered = 0;             // TIME, seconds; 0 if the name has none
};
Name parse_name(std::string_view name);

// Where a message is: its directory and its name there.
enum class Folder : std::uint8_t { new_mail, current };
const char* folder_name(Folder folder);

struct Entry {
  std::uint32_t name_at = 0, name_length = 0, base_length = 0;
  std::uint32_t old_id_at = 0, old_id_length = 0;  // the id another server gave it, if any
  Folder folder = Folder::new_mail;
  bool sized = false;      // `size` is known: from ,W= or counted
  std::uint64_t size = 0;  // with CRLF line ends, as RETR sends it
  // What finish() sorts by: the delivery time from the name; then, once
  // set_old_id() gave the entry another server's id, that server's order
  // (Dovecot's UID), which order_by_old_ids() sorts by.
  std::uint64_t sort_key = 0;
};

// The listing of one scan: names kept in one buffer, entries in order of
// delivery time, then base name (or another server's order, once
// order_by_old_ids() has put it first).
class Listing {
 public:
  std::size_t size() const { return entries_.size(); }
  const Entry& operator[](std::size_t i) const { return entries_[i]; }
  std::string_view name(const Entry& entry) const { return {names_.data() + entry.name_at, entry.name_length}; }
  std::string_view base(const Entry& entry) const { return name(entry).substr(0, entry.base_length); }

  Entry& operator[](std::size_t i) { return entries_[i]; }
  void add(Folder folder, std::string_view name);
  // About this many more bytes of names will be added: room for them.
  void expect(std::size_t name_bytes);
  // The message was renamed (its flags changed): `name` is its name now.
  void rename(Entry& entry, Folder folder, std::string_view name);
  // Keeps only the entries not marked true.
  void remove(const std::vector<bool>& removed);
  std::string_view old_id(const Entry& entry) const { return {names_.data() + entry.old_id_at, entry.old_id_length}; }
  void set_old_id(Entry& entry, std::string_view id, std::uint64_t order);
  // The entries with an old id first, in that server's order; the others
  // after them, as they were.
  void order_by_old_ids();
  // Sorts, and keeps one entry of a base name found twice (a message moved
  // from new/ to cur/ between the two directories' scans): the one in cur/.
  void finish();
  bool same_messages(const Listing& other) const;

 private:
  std::string names_;
  std::vector<Entry> entries_;
};

// Lists new/ and cur/ of the Maildir open at `maildir_fd`. A rename during
// the scan (a flag set by a mail reader, new/ to cur/ by another server)
// can make readdir miss a name: the scan is repeated until it is seen to
// be stable (the directories' change times did not move during it and are
// older than a timestamp tick, or two scans agree). Symbolic links and
// other non-files are left out and named in `skipped`. false: a directory
// could not be read (errno set).
bool scan(int maildir_fd, Listing& listing, std::string& skipped);

}  // namespace popd::mailbox::maildir
