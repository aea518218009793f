// Committing deletions on real files.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <random>

#include <xxhash.h>
#include <string>

#include "sys/fd.h"
#include "mailbox/mbox/commit.h"
#include "mailbox/mbox/journal.h"
#include "mailbox/digest.h"
#include "tests/unit/files.h"

using namespace popd::mailbox;
using namespace popd::testing;
using popd::sys::UniqueFd;

namespace {

ino_t inode(const std::string& path) {
  struct stat st;
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_ino;
}

std::string data_of(int blocks) {
  std::string data;
  for (int i = 0; i < blocks; ++i) data += std::string(1000, static_cast<char>('a' + i % 26));
  return data;
}

}  // namespace

TEST_CASE("remove_ranges keeps everything else, byte for byte, and the inode") {
  TempDir dir;
  std::string mailbox = dir.path + "/mbox", journal = dir.path + "/journal";
  std::string data = data_of(10);
  struct Case {
    std::vector<Range> removed;
    std::string expected;
  };
  std::vector<Case> cases = {
      {{{0, 1000}}, data.substr(1000)},
      {{{9000, 10000}}, data.substr(0, 9000)},
      {{{2000, 3000}, {5000, 7000}}, data.substr(0, 2000) + data.substr(3000, 2000) + data.substr(7000)},
      {{{0, 10000}}, ""},
      {{{1, 2}, {9998, 9999}}, data.substr(0, 1) + data.substr(2, 9996) + data.substr(9999)},
  };
  for (const Case& c : cases) {
    write_file(mailbox, data);
    ino_t before = inode(mailbox);
    UniqueFd fd(::open(mailbox.c_str(), O_RDWR));
    std::string error;
    CHECK(remove_ranges(fd.get(), c.removed, journal, error));
    CHECK(error.empty());
    CHECK(read_file(mailbox) == c.expected);
    CHECK(inode(mailbox) == before);
    CHECK(!exists(journal));
  }
}

TEST_CASE("large commits go in steps: every pattern of deletion gives the kept bytes exactly") {
  TempDir dir;
  std::string mailbox = dir.path + "/mbox", journal = dir.path + "/journal";
  std::mt19937 random(31);
  std::string data(12 << 20, '\0');
  for (char& c : data) c = static_cast<char>('a' + random() % 26);
  // Records of 1 to 64 KiB.
  std::vector<std::uint64_t> starts = {0};
  while (starts.back() < data.size()) starts.push_back(starts.back() + 1024 + random() % 65536);
  starts.back() = data.size();
  std::size_t records = starts.size() - 1;
  auto pattern = [&](auto doomed) {
    std::vector<Range> removed;
    std::string kept;
    for (std::size_t i = 0; i < records; ++i) {
      if (!doomed(i)) {
        kept += data.substr(starts[i], starts[i + 1] - starts[i]);
        continue;
      }
      if (!removed.empty() && removed.back().end == starts[i])
        removed.back().end = starts[i + 1];
      else
        removed.push_back({starts[i], starts[i + 1]});
    }
    return std::pair{removed, kept};
  };
  std::vector<std::pair<std::vector<Range>, std::string>> cases = {
      pattern([](std::size_t i) { return i == 0; }),                          // all but one byte journaled
      pattern([&](std::size_t i) { return i < records / 10; }),              // nothing journaled
      pattern([](std::size_t i) { return i % 2 == 1; }),                      // a growing gap
      pattern([&](std::size_t) { return random() % 10 == 0; }),              // a random tenth
      pattern([&](std::size_t i) { return i == records / 2 || i == records / 2 + 3; }),
  };
  for (const auto& [removed, kept] : cases) {
    write_file(mailbox, data);
    UniqueFd fd(::open(mailbox.c_str(), O_RDWR));
    std::string error;
    CHECK(remove_ranges(fd.get(), removed, journal, error));
    CHECK(error.empty());
    CHECK(read_file(mailbox) == kept);
    CHECK(!exists(journal));
  }
}

TEST_CASE("a step is the bytes deleted before it, with no copy, once those are many") {
  using popd::mailbox::journal::Moves;
  constexpr std::uint64_t MiB = 1 << 20, end = 200 * MiB, floor = 16 * MiB;
  auto copied = [&](std::uint64_t deleted) {
    std::vector<popd::mailbox::journal::Step> steps = Moves({{0, deleted}}, end).plan(0, end - deleted, floor);
    std::uint64_t bytes = 0;
    for (const auto& step : steps) bytes += step.saved_end - step.begin;
    return std::pair{steps.size(), bytes};
  };
  // A large attachment: steps of its size, nothing copied.
  CHECK(copied(popd::params::commit_gap_without_copy) == std::pair<std::size_t, std::uint64_t>{49, 0});
  // One small message: steps of the floor, all but the gap of each copied.
  auto [steps, bytes] = copied(MiB);
  CHECK(steps == 13);
  CHECK(bytes == 199 * MiB - 13 * MiB);
}

TEST_CASE("bytes the file gained after it was parsed are kept") {
  TempDir dir;
  std::string mailbox = dir.path + "/mbox", journal = dir.path + "/journal";
  std::string data = data_of(5);
  write_file(mailbox, data + "TAIL");
  UniqueFd fd(::open(mailbox.c_str(), O_RDWR));
  std::string error;
  CHECK(remove_ranges(fd.get(), {{4000, 5000}}, journal, error));
  CHECK(read_file(mailbox) == data.substr(0, 4000) + "TAIL");
}

TEST_CASE("removing only the end needs no journal; otherwise no journal, no change") {
  TempDir dir;
  std::string mailbox = dir.path + "/mbox", journal = dir.path + "/no/such/dir/journal";
  std::string data = data_of(5);
  write_file(mailbox, data);
  UniqueFd fd(::open(mailbox.c_str(), O_RDWR));
  std::string error;
  CHECK(!remove_ranges(fd.get(), {{1000, 2000}}, journal, error));
  CHECK(error.find("journal") != std::string::npos);
  CHECK(read_file(mailbox) == data);
  CHECK(remove_ranges(fd.get(), {{3000, 5000}}, journal, error));
  CHECK(read_file(mailbox) == data.substr(0, 3000));
}

TEST_CASE("recovery: nothing to do, a damaged journal") {
  TempDir dir;
  std::string mailbox = dir.path + "/mbox", journal = dir.path + "/journal";
  std::string data = data_of(3);
  write_file(mailbox, data);
  UniqueFd fd(::open(mailbox.c_str(), O_RDWR));

  RecoveryResult none = recover(fd.get(), journal);
  CHECK(none.ok);
  CHECK(none.action.empty());

  // A journal is named only once durable: a damaged one is left for the
  // administrator, and the mailbox is not used.
  write_file(journal, "popd-journal-1\ntruncated garbage");
  RecoveryResult damaged = recover(fd.get(), journal);
  CHECK(!damaged.ok);
  CHECK(damaged.action.find("damaged") != std::string::npos);
  CHECK(exists(journal));
  CHECK(read_file(mailbox) == data);
}

TEST_CASE("recovery reads a version 1 journal (SHA-256), as an older popd left it") {
  TempDir dir;
  std::string mailbox = dir.path + "/mbox", journal = dir.path + "/journal";
  std::string original = data_of(5);
  // Removing [1000, 2000) was interrupted halfway through the rewrite.
  std::string half = original.substr(0, 1000) + original.substr(2000, 1500) + original.substr(2500);
  write_file(mailbox, half);
  UniqueFd fd(::open(mailbox.c_str(), O_RDWR));
  struct stat st;
  REQUIRE(::fstat(fd.get(), &st) == 0);
  struct {
    char magic[16] = "popd-journal-1\n";
    std::uint64_t device, inode, begin = 1000, kept_end = 4000, end = 5000;
  } header;
  header.device = st.st_dev;
  header.inode = st.st_ino;
  std::string bytes(reinterpret_cast<const char*>(&header), sizeof header);
  bytes += original.substr(1000, 3000);
  auto sum = sha256(bytes);
  write_file(journal, bytes + std::string(reinterpret_cast<const char*>(sum.data()), sum.size()));

  RecoveryResult result = recover(fd.get(), journal);
  CHECK(result.ok);
  CHECK(result.action.find("rolled back") != std::string::npos);
  CHECK(read_file(mailbox) == original);
  CHECK(!exists(journal));

  SUBCASE("a version 2 magic on the same bytes fails its checksum: damaged, left alone") {
    write_file(mailbox, half);
    std::memcpy(bytes.data(), "popd-journal-2\n", 16);
    write_file(journal, bytes + std::string(reinterpret_cast<const char*>(sum.data()), sum.size()));
    RecoveryResult damaged = recover(fd.get(), journal);
    CHECK(!damaged.ok);
    CHECK(read_file(mailbox) == half);
  }
}

namespace {

// XXH3-128 in the journal's 32-byte form (canonical, zero-padded).
std::string xxh3(std::string_view bytes) {
  XXH128_canonical_t canonical;
  XXH128_canonicalFromHash(&canonical, XXH3_128bits(bytes.data(), bytes.size()));
  return std::string(reinterpret_cast<const char*>(canonical.digest), sizeof canonical.digest) +
         std::string(16, '\0');
}

template <typename T>
std::string bytes_of(const T& value) {
  return {reinterpret_cast<const char*>(&value), sizeof value};
}

}  // namespace

TEST_CASE("recovery completes a version 3 journal, as the previous popd left it") {
  // Removing [0, 1000) of 10,000 bytes in two steps, each with all its
  // bytes saved: killed halfway through the second, after the first was
  // recorded done.
  TempDir dir;
  std::string mailbox = dir.path + "/mbox", journal = dir.path + "/journal";
  std::string original = data_of(10), committed = original.substr(1000);
  std::string half = committed.substr(0, 6000) + original.substr(6000);
  write_file(mailbox, half);
  UniqueFd fd(::open(mailbox.c_str(), O_RDWR));
  struct stat st;
  REQUIRE(::fstat(fd.get(), &st) == 0);
  struct {
    char magic[16] = "popd-journal-3\n";
    std::uint64_t device, inode, begin = 0, kept_end = 9000, end = 10000, ranges = 1, steps = 2;
    char marker[16] = "random marker..";
  } header;
  header.device = st.st_dev;
  header.inode = st.st_ino;
  std::uint64_t plan[] = {0, 1000, /* steps */ 0, 4500, 4500, 4500, 9000, 9000};
  std::string bytes = bytes_of(header) + bytes_of(plan) + committed;
  bytes += xxh3(bytes);
  bytes.resize((bytes.size() + 4095) / 4096 * 4096 + 3 * 4096, '\0');
  // The record of step 0, in the first progress block: magic, index, the
  // journal's checksum, and the checksum of those.
  std::string sum = bytes.substr(sizeof header + sizeof plan + committed.size(), 32);
  std::string progress = "popd-progress\n" + std::string(2, '\0') + bytes_of(std::uint64_t{0}) + sum;
  progress += xxh3(progress);
  bytes.replace(bytes.size() - 3 * 4096, progress.size(), progress);

  SUBCASE("the journal as it was: the commit is completed") {
    write_file(journal, bytes);
    RecoveryResult result = recover(fd.get(), journal);
    CHECK(result.ok);
    CHECK(result.action == "completed an interrupted commit");
    CHECK(read_file(mailbox) == committed);
    CHECK(!exists(journal));
  }
  SUBCASE("a saved byte damaged: left alone") {
    bytes[sizeof header + sizeof plan + 5000] ^= 1;
    write_file(journal, bytes);
    CHECK(!recover(fd.get(), journal).ok);
    CHECK(read_file(mailbox) == half);
    CHECK(exists(journal));
  }
}

TEST_CASE("recovery applies only the user's own journal: not another's, a link, or a second name") {
  // The version 1 journal of the test above would put "original" bytes
  // back; planted by someone else, it must not be read at all.
  TempDir dir;
  std::string mailbox = dir.path + "/mbox", journal = dir.path + "/journal";
  std::string data = data_of(5);
  write_file(mailbox, data);
  UniqueFd fd(::open(mailbox.c_str(), O_RDWR));
  struct stat st;
  REQUIRE(::fstat(fd.get(), &st) == 0);
  struct {
    char magic[16] = "popd-journal-1\n";
    std::uint64_t device, inode, begin = 1000, kept_end = 2000, end = 5000;
  } header;
  header.device = st.st_dev;
  header.inode = st.st_ino;
  std::string bytes(reinterpret_cast<const char*>(&header), sizeof header);
  bytes += std::string(1000, 'X');  // what the planter wants in the mailbox
  auto sum = sha256(bytes);
  bytes += std::string(reinterpret_cast<const char*>(sum.data()), sum.size());
  auto refused = [&](const char* why) {
    CAPTURE(why);
    RecoveryResult result = recover(fd.get(), journal);
    CHECK(!result.ok);
    CHECK(result.action.find("not applied") != std::string::npos);
    CHECK(result.reply == "Recovery journal is not the user's own file");
    CHECK(read_file(mailbox) == data);
    ::unlink(journal.c_str());
  };
  if (::geteuid() == 0) {
    write_file(journal, bytes);
    REQUIRE(::chown(journal.c_str(), 54321, 54321) == 0);
    refused("another user's");
  }
  write_file(dir.path + "/elsewhere", bytes);
  REQUIRE(::symlink((dir.path + "/elsewhere").c_str(), journal.c_str()) == 0);
  refused("a symbolic link");
  REQUIRE(::link((dir.path + "/elsewhere").c_str(), journal.c_str()) == 0);
  refused("a second name");
  REQUIRE(::mkfifo(journal.c_str(), 0600) == 0);
  refused("a FIFO");
  // The same bytes as the user's own file are applied (the test can fail).
  write_file(journal, bytes);
  CHECK(recover(fd.get(), journal).ok);
  CHECK(read_file(mailbox) == data.substr(0, 1000) + std::string(1000, 'X') + data.substr(2000));
}

TEST_CASE("no journal where another user could rename it away and back") {
  TempDir dir;
  std::string mailbox = dir.path + "/mbox", journal = dir.path + "/journal";
  std::string data = data_of(5);
  write_file(mailbox, data);
  UniqueFd fd(::open(mailbox.c_str(), O_RDWR));
  REQUIRE(::chmod(dir.path.c_str(), 0777) == 0);  // anyone may rename entries
  std::string error;
  CHECK(!remove_ranges(fd.get(), {{1000, 2000}}, journal, error));
  CHECK(error.find("changed by others") != std::string::npos);
  CHECK(read_file(mailbox) == data);
  CHECK(!exists(journal));
  CHECK(recover(fd.get(), journal).ok);  // no journal: nothing to refuse
  write_file(journal, "popd-journal-1\n");
  RecoveryResult refused = recover(fd.get(), journal);
  CHECK(!refused.ok);
  CHECK(refused.reply == "Recovery journal is where others can change it");
  ::unlink(journal.c_str());
  REQUIRE(::chmod(dir.path.c_str(), 01777) == 0);  // sticky: only the owner may
  CHECK(remove_ranges(fd.get(), {{1000, 2000}}, journal, error));
  CHECK(read_file(mailbox) == data.substr(0, 1000) + data.substr(2000));
}

namespace {

// A version 5 journal of removing `removed` from `mailbox`, as a commit
// leaves it when it is cut short at its first move (here: the mailbox is
// open read-only, so that move fails): planned, bound, the first step's
// bytes saved and recorded, nothing moved.
void leave_journal(const std::string& mailbox, const std::vector<Range>& removed, const std::string& journal) {
  UniqueFd read_only(::open(mailbox.c_str(), O_RDONLY));
  std::string error;
  REQUIRE(!remove_ranges(read_only.get(), removed, journal, error));
  REQUIRE(error.find("may have taken effect") != std::string::npos);
  REQUIRE(exists(journal));
}

}  // namespace

TEST_CASE("a journal is bound to the mailbox it was made for, and to its bytes") {
  TempDir dir;
  std::string mailbox = dir.path + "/mbox", journal = dir.path + "/journal";
  std::string data = data_of(8);
  std::string committed = data.substr(0, 1000) + data.substr(2000);
  SUBCASE("the same mailbox, as the commit left it: completed") {
    write_file(mailbox, data);
    leave_journal(mailbox, {{1000, 2000}}, journal);
    UniqueFd fd(::open(mailbox.c_str(), O_RDWR));
    RecoveryResult result = recover(fd.get(), journal);
    CHECK(result.ok);
    CHECK(read_file(mailbox) == committed);
    CHECK(!exists(journal));
  }
  SUBCASE("the mailbox rewritten since (same file, other bytes): refused, nothing applied or removed") {
    write_file(mailbox, data);
    leave_journal(mailbox, {{1000, 2000}}, journal);
    std::string rewritten = data_of(9).substr(500);  // as long, and longer, but other mail
    {
      std::ofstream(mailbox, std::ios::binary | std::ios::trunc) << rewritten;  // keeps the inode
    }
    UniqueFd fd(::open(mailbox.c_str(), O_RDWR));
    RecoveryResult result = recover(fd.get(), journal);
    CHECK(!result.ok);
    CHECK(result.reply == "Recovery journal does not fit the mailbox");
    CHECK(read_file(mailbox) == rewritten);
    CHECK(exists(journal));
  }
  SUBCASE("another mailbox file at the name (restored from a backup): refused, not set aside") {
    write_file(mailbox, data);
    leave_journal(mailbox, {{1000, 2000}}, journal);
    REQUIRE(::unlink(mailbox.c_str()) == 0);
    write_file(mailbox, data);  // a new inode with the very same bytes
    UniqueFd fd(::open(mailbox.c_str(), O_RDWR));
    RecoveryResult result = recover(fd.get(), journal);
    CHECK(!result.ok);
    CHECK(result.action.find("another file") != std::string::npos);
    CHECK(read_file(mailbox) == data);
    CHECK(exists(journal));
  }
}

TEST_CASE("recovery refuses where it cannot see whether there is a journal") {
  TempDir dir;
  std::string mailbox = dir.path + "/mbox";
  write_file(mailbox, data_of(3));
  UniqueFd fd(::open(mailbox.c_str(), O_RDWR));
  RecoveryResult result = recover(fd.get(), dir.path + "/no-such-home/.popd-journal");
  CHECK(!result.ok);
  CHECK(result.reply == "Mailbox cannot be checked for an interrupted commit, try again later");
  CHECK(recover(fd.get(), dir.path + "/.popd-journal").ok);  // the directory is there: no journal
}

TEST_CASE("after a failed sync in this boot no journal is acted on until a restart") {
  TempDir dir;
  std::string mailbox = dir.path + "/mbox", journal = dir.path + "/journal";
  std::string data = data_of(8);
  write_file(mailbox, data);
  leave_journal(mailbox, {{1000, 2000}}, journal);
  char boot[64] = {};
  {
    std::ifstream("/proc/sys/kernel/random/boot_id").read(boot, sizeof boot - 1);
  }
  write_file(journal + ".sync-failed", boot);
  UniqueFd fd(::open(mailbox.c_str(), O_RDWR));
  RecoveryResult waiting = recover(fd.get(), journal);
  CHECK(!waiting.ok);
  CHECK(waiting.reply == "Mailbox waits for the disk to be checked");
  CHECK(read_file(mailbox) == data);
  write_file(journal + ".sync-failed", "an earlier boot\n");
  CHECK(recover(fd.get(), journal).ok);
  CHECK(read_file(mailbox) == data.substr(0, 1000) + data.substr(2000));
  CHECK(!exists(journal + ".sync-failed"));
}
