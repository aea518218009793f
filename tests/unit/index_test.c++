// The index on real files: trusted only when every check holds.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "sys/fd.h"
#include "mailbox/file_window.h"
#include "mailbox/mbox/index.h"
#include "mailbox/mbox/spool.h"
#include "params.h"
#include "tests/unit/files.h"
#include "tests/unit/mboxes.h"

using namespace popd::mailbox;
using namespace popd::testing;
using popd::sys::UniqueFd;

namespace {

struct SpoolFile {
  TempDir dir;
  std::string mailbox = dir.path + "/mbox", index = dir.path + "/index";
  UniqueFd fd;

  explicit SpoolFile(const std::string& data) { replace(data); }
  void replace(const std::string& data) {
    write_file(mailbox, data);
    fd.reset(::open(mailbox.c_str(), O_RDWR));
    REQUIRE(fd);
  }
  FileState state() const {
    struct stat st;
    REQUIRE(::fstat(fd.get(), &st) == 0);
    return FileState::of(st);
  }
  Mbox parsed() const {
    FileSource source(fd.get(), state().size);
    return parse(source);
  }
  void save() {
    std::string error;
    REQUIRE(save_index(index, parsed(), state(), error));
  }
  std::optional<Mbox> load() const { return load_index(index, fd.get(), state()); }
  // What a login would use: the index and a parse of the rest.
  Mbox resumed(Mbox known) const {
    FileSource source(fd.get(), state().size);
    return parse_after(source, std::move(known));
  }
};

std::string sample(std::uint32_t seed, int count = 20) {
  std::mt19937 random(seed);
  return random_mbox(random, count, "\n");
}

void append(const std::string& path, const std::string& data) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_APPEND));
  REQUIRE(::write(fd.get(), data.data(), data.size()) == static_cast<ssize_t>(data.size()));
}

// Overwrites one byte, the size staying the same.
void poke(const std::string& path, std::uint64_t offset, char byte) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY));
  REQUIRE(::pwrite(fd.get(), &byte, 1, static_cast<off_t>(offset)) == 1);
}

}  // namespace

TEST_CASE("index: a saved parse comes back whole while the spool is unchanged") {
  for (bool internal : {false, true}) {
    std::mt19937 random(7);
    SpoolFile spool(random_mbox(random, 30, internal ? "\r\n" : "\n", internal));
    spool.save();
    auto known = spool.load();
    REQUIRE(known);
    CHECK(known->end == spool.state().size);
    CHECK(summary(*known) == summary(spool.parsed()));
    CHECK(known->internal.has_value() == internal);
  }
}

TEST_CASE("index: mail appended since is parsed, the rest is taken from the index") {
  SpoolFile spool(sample(1));
  spool.save();
  std::uint64_t old_size = spool.state().size;
  append(spool.mailbox, sample(2, 3));
  auto known = spool.load();
  REQUIRE(known);
  CHECK(known->end == old_size);
  CHECK(summary(spool.resumed(*known)) == summary(spool.parsed()));
}

TEST_CASE("index: not trusted when the spool may have changed otherwise") {
  SpoolFile spool(sample(3));
  spool.save();
  Mbox parsed = spool.parsed();
  const Message& fifth = parsed.messages[4];

  SUBCASE("rewritten in place, same size: its ctime moved") {
    poke(spool.mailbox, fifth.content_offset + 1, '#');
    CHECK(!spool.load());
  }
  SUBCASE("a From_ line changed where ctime did not tell (a clock set back, say)") {
    FileState before = spool.state();
    poke(spool.mailbox, fifth.record_offset + 6, '#');
    CHECK(!load_index(spool.index, spool.fd.get(), before));
  }
  SUBCASE("a message moved where ctime did not tell") {
    FileState before = spool.state();
    poke(spool.mailbox, fifth.record_offset - 1, 'x');  // the line end before its From_ line
    CHECK(!load_index(spool.index, spool.fd.get(), before));
  }
  SUBCASE("changed and appended to: the old messages are checked too") {
    poke(spool.mailbox, fifth.record_offset, 'f');
    append(spool.mailbox, sample(4, 2));
    CHECK(!spool.load());
  }
  SUBCASE("shorter") {
    REQUIRE(::ftruncate(spool.fd.get(), static_cast<off_t>(spool.state().size - 1)) == 0);
    CHECK(!spool.load());
  }
  SUBCASE("another file at the same path") {
    std::string data = read_file(spool.mailbox);
    ::unlink(spool.mailbox.c_str());
    spool.replace(data);
    CHECK(!spool.load());
  }
}

TEST_CASE("index: a spool cut short after its size was taken is not trusted, and raises no SIGBUS") {
  SpoolFile spool(sample(5, 500));
  spool.save();
  FileState before = spool.state();
  Mbox parsed = spool.parsed();
  // Cut at a page's start, with the first From_ line checked beyond it on
  // a later page: reading that page of the mapping raises SIGBUS.
  const std::uint64_t page = ::sysconf(_SC_PAGESIZE);
  std::size_t k = 10;
  auto cut = [&](std::size_t i) { return parsed.messages[i].record_offset / page * page; };
  while (cut(k) <= parsed.messages[k - 1].content_offset) ++k;
  REQUIRE(before.size - cut(k) > 2 * page);
  REQUIRE(::ftruncate(spool.fd.get(), static_cast<off_t>(cut(k))) == 0);
  CHECK(!load_index(spool.index, spool.fd.get(), before));
}

TEST_CASE("index: every From_ line is checked in a large mailbox, through a window that moves along") {
  // Small messages, many to a page; every 250th with a body of many pages;
  // some From_ lines longer than the part checked. 14 MB: many windows.
  std::mt19937 random(11);
  const std::size_t count = 25000;
  std::string data;
  std::vector<std::size_t> probes;
  for (std::size_t i = 0; i < count; ++i) {
    std::string sender = i % 97 == 0 ? std::string(300, 's') : "s";
    data += "From " + sender + " Mon Jan  1 00:00:00 2024\n" + random_message(random, false);
    if (i % 250 == 0) {
      data += "\n" + std::string(70000, 'x') + "\n";
      probes.insert(probes.end(), {i, i + 1});
    }
    data += "\n";
  }
  // Every message near the start, the middle and the end, so across the
  // edges of several windows.
  for (std::size_t i = 0; i < 400; ++i) probes.insert(probes.end(), {i, count / 2 - 200 + i, count - 400 + i});
  SpoolFile spool(data);
  spool.save();
  FileState before = spool.state();
  Mbox parsed = spool.parsed();
  REQUIRE(parsed.messages.size() == count);
  REQUIRE(load_index(spool.index, spool.fd.get(), before));
  for (std::size_t i : probes) {
    const Message& m = parsed.messages[i];
    std::uint64_t checked = std::min<std::uint64_t>(m.content_offset - m.record_offset, popd::params::index_from_bytes);
    // The line end before it, a byte of it, the last byte checked.
    std::uint64_t at = i % 3 == 0 && i > 0 ? m.record_offset - 1
                       : i % 3 == 1        ? m.record_offset + 5
                                           : m.record_offset + checked - 1;
    CAPTURE(i);
    poke(spool.mailbox, at, '#');
    CHECK(!load_index(spool.index, spool.fd.get(), before));
    poke(spool.mailbox, at, data[at]);
  }
  CHECK(load_index(spool.index, spool.fd.get(), before));
}

TEST_CASE("index: where no window can be mapped, each From_ line is read and checked") {
  std::string data = sample(7, 300);
  SpoolFile spool(data);
  spool.save();
  FileState before = spool.state();
  Mbox parsed = spool.parsed();
  // Every guard of the SIGBUS handler taken: no other window is mapped.
  std::vector<std::unique_ptr<FileWindow>> windows;
  for (;;) {
    windows.push_back(std::make_unique<FileWindow>());
    if (!windows.back()->bytes(spool.fd.get(), 0, 1, before.size, 0)) break;
    REQUIRE(windows.size() < 100);
  }
  CHECK(load_index(spool.index, spool.fd.get(), before));
  for (std::size_t i : {1, 150, 299}) {
    const Message& m = parsed.messages[i];
    for (std::uint64_t at : {m.record_offset - 1, m.record_offset + 3}) {
      CAPTURE(i);
      poke(spool.mailbox, at, '#');
      CHECK(!load_index(spool.index, spool.fd.get(), before));
      poke(spool.mailbox, at, data[at]);
    }
  }
  CHECK(load_index(spool.index, spool.fd.get(), before));
  REQUIRE(::ftruncate(spool.fd.get(), static_cast<off_t>(parsed.messages[200].record_offset + 2)) == 0);
  CHECK(!load_index(spool.index, spool.fd.get(), before));
}

TEST_CASE("index: a damaged, foreign or misleading index is not used") {
  SpoolFile spool(sample(5));
  spool.save();
  std::string bytes = read_file(spool.index);
  REQUIRE(spool.load());

  SUBCASE("torn") {
    write_file(spool.index, bytes.substr(0, bytes.size() - 1));
    CHECK(!spool.load());
  }
  SUBCASE("a byte flipped") {
    bytes[bytes.size() / 2] ^= 1;
    write_file(spool.index, bytes);
    CHECK(!spool.load());
  }
  SUBCASE("empty, or something else") {
    write_file(spool.index, "");
    CHECK(!spool.load());
    write_file(spool.index, std::string(4096, 'x'));
    CHECK(!spool.load());
  }
  SUBCASE("a symbolic link") {
    std::string target = spool.dir.path + "/elsewhere";
    write_file(target, bytes);
    ::unlink(spool.index.c_str());
    REQUIRE(::symlink(target.c_str(), spool.index.c_str()) == 0);
    CHECK(!spool.load());
  }
  SUBCASE("records out of order or past the parsed end, with a valid checksum") {
    Mbox box = spool.parsed();
    Mbox bad = box;
    std::swap(bad.messages[2], bad.messages[3]);
    std::string error;
    REQUIRE(save_index(spool.index, bad, spool.state(), error));
    CHECK(!spool.load());
    bad = box;
    bad.messages[1].content_length = box.record_end(1) - box.messages[1].content_offset + 1;  // overlaps
    REQUIRE(save_index(spool.index, bad, spool.state(), error));
    CHECK(!spool.load());
    bad = box;
    bad.messages.back().content_length = box.end - box.messages.back().content_offset + 1;
    REQUIRE(save_index(spool.index, bad, spool.state(), error));
    CHECK(!spool.load());
    bad = box;
    bad.messages[1].record_offset += 1;  // not a From_ line
    bad.messages[1].content_offset += 1;
    REQUIRE(save_index(spool.index, bad, spool.state(), error));
    CHECK(!spool.load());
  }
}

TEST_CASE("index: the spool is never written, and a session's index follows its commit") {
  TempDir dir;
  std::string mailbox = dir.path + "/mbox", journal = dir.path + "/journal", index = dir.path + "/index";
  std::string data = sample(6, 40);
  write_file(mailbox, data);
  struct stat before;
  REQUIRE(::stat(mailbox.c_str(), &before) == 0);
  std::vector<std::string> uids;
  {
    auto opened = popd::mailbox::Spool::open(mailbox, {journal, index, dir.path + "/uidvalidity"});
    REQUIRE(opened.spool);
    for (std::size_t i = 0; i < opened.spool->count(); ++i) uids.push_back(opened.spool->uid(i));
    std::string error;
    REQUIRE(opened.spool->save_index(error));
  }
  CHECK(read_file(mailbox) == data);
  struct stat after;
  REQUIRE(::stat(mailbox.c_str(), &after) == 0);
  CHECK(after.st_mtim.tv_nsec == before.st_mtim.tv_nsec);
  CHECK(exists(index));

  std::vector<bool> deleted(uids.size());
  deleted[0] = deleted[7] = deleted[8] = deleted[39] = true;
  {
    auto opened = popd::mailbox::Spool::open(mailbox, {journal, index, dir.path + "/uidvalidity"});
    REQUIRE(opened.spool);
    std::string error;
    REQUIRE(opened.spool->commit(deleted, error));
    REQUIRE(opened.spool->save_index(error));
  }
  UniqueFd fd(::open(mailbox.c_str(), O_RDONLY));
  struct stat st;
  REQUIRE(::fstat(fd.get(), &st) == 0);
  auto known = load_index(index, fd.get(), FileState::of(st));
  REQUIRE(known);
  FileSource source(fd.get(), st.st_size);
  CHECK(summary(*known) == summary(parse(source)));
  REQUIRE(known->messages.size() == uids.size() - 4);
  CHECK(known->messages[0].uid() == uids[1]);
  CHECK(known->messages.back().uid() == uids[38]);
}

TEST_CASE("index: ids of other schemes come back the same, and a scheme's index serves only it") {
  std::string data = "From a Mon Jan  1 00:00:00 2024\nX-IMAPbase: 77 2\nX-UID: 1\nX-UIDL: one\nReceived: x\n\nb\n\n"
                     "From a Mon Jan  1 00:00:00 2024\nX-UID: 2\nX-UIDL: two\nReceived: y\n\nb\n\n"
                     "From a Mon Jan  1 00:00:00 2024\nX-UIDL: two\nReceived: y\n\nb\n";
  for (UidScheme scheme : {UidScheme::popa3d, UidScheme::dovecot, UidScheme::uw_imap, UidScheme::x_uidl}) {
    SpoolFile spool(data);
    FileSource source(spool.fd.get(), spool.state().size);
    Mbox box = parse(source, scheme);
    std::string error;
    REQUIRE(save_index(spool.index, box, spool.state(), error));
    auto known = load_index(spool.index, spool.fd.get(), spool.state(), scheme);
    REQUIRE(known);
    for (std::size_t i = 0; i < box.messages.size(); ++i) CHECK(known->uid(i) == box.uid(i));
    CHECK(!load_index(spool.index, spool.fd.get(), spool.state(), UidScheme::popd));
    // Mail appended: the known part's values and the new ones together.
    append(spool.mailbox, "\nFrom b Mon Jan  1 00:00:00 2024\nX-UID: 3\nX-UIDL: three\n\nnew\n");
    known = load_index(spool.index, spool.fd.get(), spool.state(), scheme);
    REQUIRE(known);
    FileSource grown(spool.fd.get(), spool.state().size);
    Mbox resumed = parse_after(grown, std::move(*known)), whole = parse(grown, scheme);
    REQUIRE(resumed.messages.size() == 4);
    for (std::size_t i = 0; i < whole.messages.size(); ++i) CHECK(resumed.uid(i) == whole.uid(i));
  }
}

TEST_CASE("index: rewritten in place and cut to its length, never through a link") {
  SpoolFile spool(sample(9, 40));
  spool.save();
  struct stat first;
  REQUIRE(::stat(spool.index.c_str(), &first) == 0);
  // A shorter mailbox, a shorter index: what was beyond it is gone (a load
  // checks the file's length).
  spool.replace(sample(10, 5));
  spool.save();
  struct stat second;
  REQUIRE(::stat(spool.index.c_str(), &second) == 0);
  CHECK(second.st_ino == first.st_ino);
  CHECK(second.st_size < first.st_size);
  auto known = spool.load();
  REQUIRE(known);
  CHECK(known->messages.size() == 5);

  // Anything but a file of the user's with one name is replaced, as a
  // rename would, and never written through: refused, it would leave every
  // later login to parse the whole spool.
  auto replaced = [&] {
    spool.replace(sample(11, 8));
    spool.save();
    struct stat st;
    REQUIRE(::lstat(spool.index.c_str(), &st) == 0);
    CHECK(S_ISREG(st.st_mode));
    CHECK(st.st_nlink == 1);
    CHECK(st.st_uid == ::geteuid());
    CHECK((st.st_mode & 07777) == 0600);
    auto loaded = spool.load();
    REQUIRE(loaded);
    CHECK(loaded->messages.size() == 8);
  };
  SUBCASE("a second name for the file (a backup with hard links)") {
    std::string other = spool.dir.path + "/other";
    REQUIRE(::link(spool.index.c_str(), other.c_str()) == 0);
    std::string before = read_file(other);
    replaced();
    CHECK(read_file(other) == before);
  }
  SUBCASE("a symbolic link") {
    std::string target = spool.dir.path + "/elsewhere";
    write_file(target, "mine");
    ::unlink(spool.index.c_str());
    REQUIRE(::symlink(target.c_str(), spool.index.c_str()) == 0);
    replaced();
    CHECK(read_file(target) == "mine");
  }
  SUBCASE("a file of another user's (left by root)") {
    if (::geteuid() != 0) return;  // only root can give a file away
    REQUIRE(::chown(spool.index.c_str(), 12345, 12345) == 0);
    replaced();
  }
  SUBCASE("a directory: an error, nothing removed") {
    ::unlink(spool.index.c_str());
    REQUIRE(::mkdir(spool.index.c_str(), 0700) == 0);
    std::string error;
    CHECK(!save_index(spool.index, spool.parsed(), spool.state(), error));
    CHECK(!error.empty());
    struct stat st;
    REQUIRE(::stat(spool.index.c_str(), &st) == 0);
    CHECK(S_ISDIR(st.st_mode));
  }
}

TEST_CASE("index: saved again, only what changed is written") {
  SpoolFile spool(sample(12, 2000));  // 144 KB of entries: several blocks
  spool.save();
  auto age = [&](std::time_t seconds) {
    struct timespec times[2] = {{seconds, 0}, {seconds, 0}};
    REQUIRE(::utimensat(AT_FDCWD, spool.index.c_str(), times, 0) == 0);
  };
  auto modified = [&] {
    struct stat st;
    REQUIRE(::stat(spool.index.c_str(), &st) == 0);
    return st.st_mtim.tv_sec;
  };
  age(1000);
  spool.save();  // the same parse: not a byte written
  CHECK(modified() == 1000);
  append(spool.mailbox, "\nFrom b Mon Jan  1 00:00:00 2024\n\nnew\n");
  spool.save();
  CHECK(modified() != 1000);
  auto known = spool.load();
  REQUIRE(known);
  CHECK(known->messages.size() == 2001);
  CHECK(summary(*known) == summary(spool.parsed()));
}

namespace {

// `data` with the From_ line of its `n`th message changed, the size the same.
std::string with_other_from_line(std::string data, std::size_t n) {
  StringSource source(data);
  Mbox box = parse(source);
  std::uint64_t at = box.messages.at(n).record_offset + 5;  // after "From "
  data[at] = data[at] == 'X' ? 'Y' : 'X';
  return data;
}

}  // namespace

TEST_CASE("index: trusted by the spool's state alone, unless saved within a tick of its change") {
  SpoolFile spool(sample(11, 30));
  spool.save();  // right after the spool was written: racy
  bool lazily = true;
  REQUIRE(load_index(spool.index, spool.fd.get(), spool.state(), UidScheme::popd, false, &lazily));
  CHECK_FALSE(lazily);
  ::usleep(2'100'000);
  spool.save();
  REQUIRE(load_index(spool.index, spool.fd.get(), spool.state(), UidScheme::popd, false, &lazily));
  CHECK(lazily);
  // A shared spool's times come from another host: always checked in full.
  REQUIRE(load_index(spool.index, spool.fd.get(), spool.state(), UidScheme::popd, true, &lazily));
  CHECK_FALSE(lazily);
  // Grown: taken from the index but for the last message, which is checked.
  append(spool.mailbox, "From new@example.org Mon Jan  1 00:00:00 2024\nSubject: new\n\nnew\n");
  REQUIRE(load_index(spool.index, spool.fd.get(), spool.state(), UidScheme::popd, false, &lazily));
  CHECK(lazily);
}

TEST_CASE("index: one that lies about a message is caught before RETR or a commit touches it") {
  TempDir dir;
  std::string mailbox = dir.path + "/mbox", journal = dir.path + "/journal", index = dir.path + "/index";
  std::string data = sample(12, 30);
  write_file(mailbox, data);
  ::usleep(2'100'000);  // not racy: the index is trusted by the spool's state
  auto lie = [&] {
    std::string other = with_other_from_line(data, 10);
    StringSource source(other);
    struct stat st;
    REQUIRE(::stat(mailbox.c_str(), &st) == 0);
    std::string error;
    REQUIRE(save_index(index, parse(source), FileState::of(st), error));
  };
  lie();
  {
    auto opened = popd::mailbox::Spool::open(mailbox, {journal, index, dir.path + "/uidvalidity"});
    REQUIRE(opened.spool);
    CHECK(opened.spool->verify(0));
    CHECK_FALSE(opened.spool->verify(10));  // its From_ line is not the one indexed
    CHECK_FALSE(exists(index));             // dropped: the next login parses
  }
  lie();
  {
    auto opened = popd::mailbox::Spool::open(mailbox, {journal, index, dir.path + "/uidvalidity"});
    REQUIRE(opened.spool);
    std::vector<bool> deleted(opened.spool->count());
    deleted[3] = true;  // moves message 10
    std::string error;
    CHECK_FALSE(opened.spool->commit(deleted, error));
    CHECK(error.find("changed since it was indexed") != std::string::npos);
    CHECK_FALSE(exists(index));
  }
  CHECK(read_file(mailbox) == data);
  // A commit that touches nothing the index lies about is let through.
  lie();
  {
    auto opened = popd::mailbox::Spool::open(mailbox, {journal, index, dir.path + "/uidvalidity"});
    REQUIRE(opened.spool);
    std::vector<bool> deleted(opened.spool->count());
    deleted[20] = true;
    std::string error;
    CHECK(opened.spool->commit(deleted, error));
  }
}

TEST_CASE("index: a spool rewritten by a mail reader, then grown, is caught where a message is read") {
  TempDir dir;
  std::string mailbox = dir.path + "/mbox", journal = dir.path + "/journal", index = dir.path + "/index";
  auto record = [](int i, const std::string& status) {
    return "From s@example.org Mon Jan  1 00:00:0" + std::to_string(i) + " 2024\nSubject: " + std::to_string(i) +
           "\n" + status + "\n" + std::string(200, 'x') + "\n\n";
  };
  write_file(mailbox, record(1, "") + record(2, "Status: RO\n") + record(3, ""));
  ::usleep(2'100'000);
  {
    auto opened = popd::mailbox::Spool::open(mailbox, {journal, index, dir.path + "/uidvalidity"});
    REQUIRE(opened.spool);
    std::string error;
    REQUIRE(opened.spool->save_index(error));
  }
  // The reader moves the Status line from message 2 to 1: message 3 stays
  // where it was; then a delivery appends.
  std::string rewritten = record(1, "Status: RO\n") + record(2, "") + record(3, "");
  write_file(mailbox, rewritten);
  append(mailbox, record(4, ""));
  ::usleep(2'100'000);
  auto opened = popd::mailbox::Spool::open(mailbox, {journal, index, dir.path + "/uidvalidity"});
  REQUIRE(opened.spool);
  CHECK_FALSE(opened.spool->verify(0));  // its end, message 2's start, moved
  CHECK_FALSE(exists(index));
}
