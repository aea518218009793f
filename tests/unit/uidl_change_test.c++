// The uidl=HASH/NEW of the session's log line and its record.
#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "mailbox/uidl_change.h"
#include "params.h"
#include "tests/unit/files.h"

using namespace popd::mailbox;
using namespace popd::testing;

namespace {

struct Ids final : popd::protocol::Maildrop {
  std::vector<std::string> ids;
  std::size_t count() const override { return ids.size(); }
  std::uint64_t size(std::size_t) const override { return 1; }
  std::string uid(std::size_t i) const override { return ids[i]; }
  bool send(std::size_t, std::optional<std::uint64_t>, popd::protocol::MessageSink&) override { return true; }
  bool commit(const std::vector<bool>&, std::string&) override { return true; }
};

}  // namespace

TEST_CASE("uidl change: no count without a record; the same listing, the same hash and none new") {
  TempDir dir;
  std::string path = dir.path + "/.popd-index.uidls";
  Ids drop;
  drop.ids = {"a", "b", "c"};
  UidlChange first = record_uidl_change(drop, path, ::geteuid());
  CHECK(first.hash.size() == 8);
  CHECK(!first.added);
  CHECK(first.note.empty());
  UidlChange same = record_uidl_change(drop, path, ::geteuid());
  CHECK(same.hash == first.hash);
  CHECK(same.added == 0u);

  drop.ids = {"b", "c", "d", "e"};  // a deleted, two arrived
  UidlChange next = record_uidl_change(drop, path, ::geteuid());
  CHECK(next.hash != first.hash);
  CHECK(next.added == 2u);
  drop.ids = {"B", "C", "D", "E"};  // every id changed
  CHECK(record_uidl_change(drop, path, ::geteuid()).added == 4u);
  drop.ids = {"C", "B", "D", "E"};  // the same ids in another order: another listing
  UidlChange reordered = record_uidl_change(drop, path, ::geteuid());
  CHECK(reordered.added == 0u);
  CHECK(reordered.hash != next.hash);
}

TEST_CASE("uidl change: a damaged or untrusted record gives no count, never a wrong one") {
  TempDir dir;
  std::string path = dir.path + "/.popd-index.uidls";
  Ids drop;
  drop.ids = {"a"};
  write_file(path, "popd uidls 1\nabc");  // not whole hashes
  CHECK(!record_uidl_change(drop, path, ::geteuid()).added);
  CHECK(record_uidl_change(drop, path, ::geteuid()).added == 0u);  // rewritten
  CHECK(!parse_uidl_hashes(format_uidl_hashes({2, 1})));            // unsorted
  CHECK(parse_uidl_hashes(format_uidl_hashes({1, 2})) == std::vector<std::uint64_t>{1, 2});
  std::string link = dir.path + "/link";
  REQUIRE(::symlink(path.c_str(), link.c_str()) == 0);
  UidlChange linked = record_uidl_change(drop, link, ::geteuid());
  CHECK(!linked.added);
  CHECK(linked.note.find("symbolic link") != std::string::npos);
  record_uidl_change(drop, link, ::geteuid());
  struct stat st;
  CHECK((::lstat(link.c_str(), &st) == 0 && S_ISLNK(st.st_mode)));  // left be, never followed
  // One too large to read is replaced, as a damaged one is.
  REQUIRE(::truncate(path.c_str(), popd::params::max_state_file + 8) == 0);
  UidlChange large = record_uidl_change(drop, path, ::geteuid());
  CHECK(!large.added);
  CHECK(large.note.find("larger than") != std::string::npos);
  CHECK(record_uidl_change(drop, path, ::geteuid()).added == 0u);
}
