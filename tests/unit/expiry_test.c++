// --expire: the records of first retrieval, and the deletions they add.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

#include "mailbox/expiry.h"
#include "tests/unit/files.h"

using namespace popd::mailbox;
using namespace popd::testing;
using namespace std::chrono_literals;

namespace {

struct Lines final : popd::protocol::MessageSink {
  void text(std::string_view) override {}
  void end_line() override {}
};

// Messages known by their unique-ids only; commit keeps the others.
struct IdStore final : Store {
  std::vector<std::string> ids;
  std::vector<bool> last_commit;
  bool fail = false;
  std::size_t count() const override { return ids.size(); }
  std::uint64_t size(std::size_t) const override { return 10; }
  std::string uid(std::size_t i) const override { return ids[i]; }
  bool send(std::size_t, std::optional<std::uint64_t>, popd::protocol::MessageSink&) override { return true; }
  bool commit(const std::vector<bool>& deleted, std::string& error) override {
    last_commit = deleted;
    if (fail) {
      error = "disk full";
      return false;
    }
    std::vector<std::string> kept;
    for (std::size_t i = 0; i < ids.size(); ++i)
      if (!deleted[i]) kept.push_back(ids[i]);
    ids = kept;
    return true;
  }
  void refresh_lock() override {}
  bool save_index(std::string&) override { return true; }
};

// The records file with every time moved `back`: as if the clock moved on.
void age(const std::string& path, std::chrono::seconds back) {
  auto records = parse_retrieved(read_file(path), Clock::now());
  for (auto& [id, when] : records) when -= back;
  write_file(path, format_retrieved(records));
}

}  // namespace

TEST_CASE("the records: written and read back; damaged lines and future times left out") {
  auto now = Clock::now();
  auto t = Clock::time_point(std::chrono::seconds(1'700'000'000));
  std::map<std::string, Clock::time_point> records{{"abc", t}, {"x y", t + 60s}};
  CHECK(parse_retrieved(format_retrieved(records), now) == records);
  CHECK(parse_retrieved("popd retrieved 1\n1700000000 abc\n17 \n-5 d\nx e\n99999999999 f\n1700000000 g", now) ==
        std::map<std::string, Clock::time_point>{{"abc", t}});  // "g" lacks its line end
  CHECK(parse_retrieved("1700000000 abc\n", now).empty());  // no header: not ours
  // Far in the future, too far for nanoseconds: left out, not wrapped round to 1970.
  CHECK(parse_retrieved("popd retrieved 1\n18446744074 x\n9223372036854775807 y\n", now).empty());
}

TEST_CASE("expire: a clock set back since the records were written expires and records nothing") {
  TempDir dir;
  std::string path = dir.path + "/.popd-index.retrieved";
  auto inner = std::make_unique<IdStore>();
  inner->ids = {"a", "b"};
  IdStore* ids = inner.get();
  ExpiringStore store(std::move(inner), path, ::geteuid(), std::chrono::days(0));
  write_file(path, "popd retrieved 1\n1700000000 a\n");
  auto future = std::chrono::system_clock::to_time_t(Clock::now() + std::chrono::days(30));
  struct timespec times[2] = {{future, 0}, {future, 0}};
  REQUIRE(::utimensat(AT_FDCWD, path.c_str(), times, 0) == 0);
  std::string error;
  REQUIRE(store.commit({false, true}, error));  // the client's deletion alone
  CHECK(store.expired() == 0);
  CHECK(ids->ids == std::vector<std::string>{"a"});
  CHECK(read_file(path) == "popd retrieved 1\n1700000000 a\n");
  CHECK(!store.note().empty());
}

TEST_CASE("expire: what was retrieved goes after the days, with the client's deletions, in one commit") {
  TempDir dir;
  std::string path = dir.path + "/.popd-index.retrieved";
  auto inner = std::make_unique<IdStore>();
  inner->ids = {"a", "b", "c", "d"};
  IdStore* ids = inner.get();
  ExpiringStore store(std::move(inner), path, ::geteuid(), std::chrono::days(7));
  Lines sink;
  std::string error;
  store.send(0, std::nullopt, sink);  // RETR 1
  store.send(1, 0, sink);             // TOP 2 0: not a retrieval
  store.send(2, std::nullopt, sink);  // RETR 3
  REQUIRE(store.commit({false, false, false, true}, error));  // DELE 4
  CHECK(store.expired() == 0);
  CHECK(ids->ids == std::vector<std::string>{"a", "b", "c"});
  auto records = parse_retrieved(read_file(path), Clock::now());
  CHECK(records.size() == 2);
  CHECK(records.count("a") == 1);
  CHECK(records.count("c") == 1);

  SUBCASE("six days on: nothing goes") {
    age(path, std::chrono::days(6));
    REQUIRE(store.commit({false, false, false}, error));
    CHECK(store.expired() == 0);
    CHECK(ids->ids.size() == 3);
  }
  SUBCASE("seven days on: the two retrieved go, the other stays, and their records") {
    age(path, std::chrono::days(7));
    store.send(1, std::nullopt, sink);  // b retrieved now: it stays
    REQUIRE(store.commit({false, false, false}, error));
    CHECK(store.expired() == 2);
    CHECK(ids->ids == std::vector<std::string>{"b"});
    records = parse_retrieved(read_file(path), Clock::now());
    CHECK(records.size() == 1);
    CHECK(records.count("b") == 1);
  }
  SUBCASE("a failed commit deletes nothing and keeps every record") {
    age(path, std::chrono::days(30));
    ids->fail = true;
    CHECK(!store.commit({false, false, false}, error));
    CHECK(ids->last_commit == std::vector<bool>{true, false, true});  // what it asked
    CHECK(store.expired() == 0);
    CHECK(parse_retrieved(read_file(path), Clock::now()).size() == 2);
  }
}

TEST_CASE("expire: no records file while nothing was retrieved; another's file is not trusted") {
  TempDir dir;
  std::string path = dir.path + "/.popd-index.retrieved";
  auto inner = std::make_unique<IdStore>();
  inner->ids = {"a"};
  ExpiringStore store(std::move(inner), path, ::geteuid(), std::chrono::days(0));
  std::string error;
  REQUIRE(store.commit({false}, error));
  CHECK(::access(path.c_str(), F_OK) != 0);
  REQUIRE(::symlink("/etc/passwd", path.c_str()) == 0);
  Lines sink;
  store.send(0, std::nullopt, sink);
  REQUIRE(store.commit({false}, error));  // --expire 0: retrieved, so gone at QUIT
  CHECK(store.expired() == 1);
  CHECK(store.note().find("symbolic link") != std::string::npos);
}
