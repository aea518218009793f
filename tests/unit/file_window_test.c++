// The mapped window RETR and TOP read the spool through, on real files:
// the bytes it gives, and a file cut short under it.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "sys/fd.h"
#include "mailbox/file_window.h"
#include "mailbox/mbox/spool.h"
#include "params.h"
#include "tests/unit/files.h"
#include "tests/unit/mboxes.h"

using namespace popd::mailbox;
using namespace popd::testing;
using popd::sys::UniqueFd;

namespace {

// What mailbox::send gives for a message of `data`, from memory.
std::string sent_from_memory(const std::string& data, const Message& message,
                             std::optional<std::uint64_t> body_lines) {
  CollectSink sink;
  send(std::string_view(data).substr(message.content_offset, message.content_length), message, body_lines, sink);
  return sink.out;
}

}  // namespace

TEST_CASE("FileWindow: the file's bytes at any offset, from a window that moves on when it must") {
  TempDir dir;
  std::string path = dir.path + "/file", data;
  std::mt19937 random(7);
  for (int i = 0; i < 100000; ++i) data += static_cast<char>('a' + random() % 26);
  write_file(path, data);
  UniqueFd fd(::open(path.c_str(), O_RDONLY));
  REQUIRE(fd);
  FileWindow window;
  CHECK(window.bytes(fd.get(), 5, 5, data.size(), 8192) == std::string_view());
  CHECK(!window.bytes(fd.get(), 10, data.size() + 1, data.size(), 8192));  // beyond the end
  for (int i = 0; i < 2000; ++i) {
    std::uint64_t begin = random() % data.size(), end = begin + random() % (data.size() - begin + 1);
    auto bytes = window.bytes(fd.get(), begin, end, data.size(), 1 + random() % 20000);
    REQUIRE(bytes);
    REQUIRE(*bytes == std::string_view(data).substr(begin, end - begin));
  }
  CHECK(!window.cut_short());
}

TEST_CASE("FileWindow: a file cut short while mapped reads as zeros and says so; the process lives") {
  TempDir dir;
  std::string path = dir.path + "/file", data(3 * 65536, 'm');
  write_file(path, data);
  UniqueFd fd(::open(path.c_str(), O_RDWR));
  REQUIRE(fd);
  FileWindow window;
  auto bytes = window.bytes(fd.get(), 100, data.size(), data.size(), 0);
  REQUIRE(bytes);
  CHECK(std::string(bytes->substr(0, 10)) == "mmmmmmmmmm");
  CHECK(!window.cut_short());
  REQUIRE(::ftruncate(fd.get(), 4096) == 0);  // as a careless program might
  std::string copy(*bytes);                    // SIGBUS, without the window's handler
  CHECK(window.cut_short());
  // What lay beyond the new end reads as zeros (what was copied before the
  // fault was the file's).
  CHECK(copy.find_first_not_of('\0', 4096 - 100) == std::string::npos);
  // Mapped again, it still says so (what was read through it is suspect);
  // a new window starts clean.
  window.unmap();
  bytes = window.bytes(fd.get(), 0, 4096, 4096, 0);
  REQUIRE(bytes);
  CHECK(*bytes == std::string(4096, 'm'));
  CHECK(window.cut_short());
  FileWindow fresh;
  REQUIRE(fresh.bytes(fd.get(), 0, 4096, 4096, 0));
  CHECK(!fresh.cut_short());
}

TEST_CASE("FileWindow: a window the SIGBUS handler cannot guard is not mapped") {
  TempDir dir;
  std::string path = dir.path + "/file";
  write_file(path, std::string(10000, 'w'));
  UniqueFd fd(::open(path.c_str(), O_RDONLY));
  REQUIRE(fd);
  std::vector<std::unique_ptr<FileWindow>> windows;
  for (;;) {
    windows.push_back(std::make_unique<FileWindow>());
    if (!windows.back()->bytes(fd.get(), 0, 10, 10000, 0)) break;
    REQUIRE(windows.size() < 100);
  }
  CHECK(windows.size() == 9);  // eight guarded at once
  windows.erase(windows.begin());
  CHECK(windows.back()->bytes(fd.get(), 0, 10, 10000, 0) == "wwwwwwwwww");
}

TEST_CASE("Spool::send: every message as mailbox::send gives it, through windows and pread alike") {
  TempDir dir;
  std::string mailbox = dir.path + "/mbox";
  std::mt19937 random(11);
  // Enough mail for several windows, and a message larger than a window.
  std::string data = random_mbox(random, 4000, "\n");
  data += "From big Mon Jan  1 00:00:00 2024\nSubject: big\n\n" +
          std::string(popd::params::read_block + 5000, 'b') + "\n.\n\n";
  data += random_mbox(random, 4000, "\r\n");
  REQUIRE(data.size() > 3 * popd::params::read_block);
  write_file(mailbox, data);
  auto opened = Spool::open(mailbox, {dir.path + "/journal", dir.path + "/index", dir.path + "/uidvalidity"});
  REQUIRE(opened.spool);
  Spool& spool = *opened.spool;
  StringSource source(data);
  Mbox box = parse(source);
  REQUIRE(spool.count() == box.messages.size());
  // In order, as clients fetch, and at random.
  for (int i = 0; i < 2 * static_cast<int>(box.messages.size()); ++i) {
    std::size_t index = i < static_cast<int>(box.messages.size()) ? i : random() % box.messages.size();
    std::optional<std::uint64_t> body_lines;
    if (random() % 4 == 0) body_lines = random() % 3;
    CollectSink from_spool;
    REQUIRE(spool.send(index, body_lines, from_spool));
    REQUIRE(from_spool.out == sent_from_memory(data, box.messages[index], body_lines));
  }

  // The spool cut short behind the lock: the messages it lost cannot be
  // sent (false: the session ends the reply as broken), and none is
  // sent with bytes that are not the message's.
  UniqueFd fd(::open(mailbox.c_str(), O_WRONLY));
  REQUIRE(::ftruncate(fd.get(), box.messages[box.messages.size() / 2].record_offset) == 0);
  CollectSink lost;
  CHECK(!spool.send(box.messages.size() - 1, std::nullopt, lost));
  for (std::size_t index = box.messages.size() / 2 - 3; index < box.messages.size(); ++index) {
    CollectSink sink;
    if (spool.send(index, std::nullopt, sink)) {
      CHECK(index < box.messages.size() / 2);
      CHECK(sink.out.find('\0') == std::string::npos);
    }
  }
}

TEST_CASE("Spool::send: where the spool cannot be mapped, it is read") {
  TempDir dir;
  std::string mailbox = dir.path + "/mbox";
  std::mt19937 random(13);
  std::string data = random_mbox(random, 300, "\n");
  write_file(mailbox, data);
  auto opened = Spool::open(mailbox, {dir.path + "/journal", dir.path + "/index", dir.path + "/uidvalidity"});
  REQUIRE(opened.spool);
  // Here because no guard is free for its window when it first needs one.
  UniqueFd fd(::open(mailbox.c_str(), O_RDONLY));
  std::vector<std::unique_ptr<FileWindow>> others;
  for (int i = 0; i < 8; ++i) {
    others.push_back(std::make_unique<FileWindow>());
    REQUIRE(others.back()->bytes(fd.get(), 0, 10, data.size(), 0));
  }
  StringSource source(data);
  Mbox box = parse(source);
  REQUIRE(opened.spool->count() == box.messages.size());
  for (std::size_t index = 0; index < box.messages.size(); ++index) {
    CollectSink from_spool;
    REQUIRE(opened.spool->send(index, std::nullopt, from_spool));
    REQUIRE(from_spool.out == sent_from_memory(data, box.messages[index], std::nullopt));
  }
}
