// The reply ring between the session and the TLS relay (io/ring.h): two
// mappings of one memfd, as the two processes have them, and a real second
// process for the wake-ups.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "io/ring.h"
#include "params.h"
#include "tests/unit/files.h"

using popd::io::Ring;
using popd::sys::UniqueFd;

namespace {

constexpr std::size_t capacity = popd::params::ring_size;

// The relay's ring and the session's view of the same memory.
struct Pair {
  Ring reader, writer;
};

Pair make_pair() {
  std::string error;
  auto reader = Ring::create(error);
  REQUIRE_MESSAGE(reader, error);
  auto writer = Ring::attach(UniqueFd(::dup(reader->fd())), error);
  REQUIRE_MESSAGE(writer, error);
  return {std::move(*reader), std::move(*writer)};
}

void put(Ring& writer, std::string_view bytes) {
  auto room = writer.room();
  REQUIRE(room.size() >= bytes.size());
  std::memcpy(room.data(), bytes.data(), bytes.size());
  writer.stage(bytes.size());
}

std::string pattern(std::size_t size, std::size_t seed) {
  std::string s(size, '\0');
  for (std::size_t i = 0; i < size; ++i) s[i] = static_cast<char>((i * 131 + seed) % 251);
  return s;
}

}  // namespace

TEST_CASE("ring: published bytes reach the reader; staged ones do not") {
  auto [reader, writer] = make_pair();
  CHECK(writer.room().size() == capacity);
  CHECK(reader.data().empty());
  put(writer, "+OK 2 messages\r\n");
  CHECK(reader.data().empty());  // staged only
  writer.publish();
  CHECK(reader.data() == "+OK 2 messages\r\n");
  reader.consume(4);
  CHECK(reader.data() == "2 messages\r\n");
  CHECK(writer.room().size() == capacity - 12);
  CHECK(!reader.broken());
  CHECK(!writer.broken());
}

TEST_CASE("ring: a piece across the end is contiguous for both sides") {
  auto [reader, writer] = make_pair();
  // Move both positions to 100 bytes before the end.
  std::string filler(capacity - 100, 'x');
  put(writer, filler);
  writer.publish();
  reader.consume(reader.data().size());
  std::string piece = pattern(5000, 7);
  REQUIRE(writer.room().size() == capacity);
  put(writer, piece);  // 100 bytes before the end, 4900 after it
  writer.publish();
  CHECK(reader.data() == piece);
}

TEST_CASE("ring: full means no room until the reader consumes; waiting and waking") {
  auto [reader, writer] = make_pair();
  put(writer, std::string(capacity, 'a'));
  CHECK(writer.room().empty());
  CHECK(!writer.publish());                    // the reader does not sleep
  CHECK(writer.prepare_to_wait_for_room());    // still full: sleep
  CHECK(!reader.consume(10));                  // the writer sleeps, but too little is free
  CHECK(writer.room().size() == 10);
  CHECK(reader.consume(capacity / 2 - 10));    // half is free: wake it
  CHECK(!reader.consume(10));                  // woken once
  CHECK(writer.room().size() == capacity / 2 + 10);
  CHECK(!writer.prepare_to_wait_for_room());   // room now: no sleep
  reader.consume(reader.data().size());
  CHECK(reader.prepare_to_wait_for_data());    // empty: sleep
  put(writer, "x");
  CHECK(writer.publish());                     // the reader sleeps: wake it
  CHECK(!reader.prepare_to_wait_for_data());   // data now
}

TEST_CASE("ring: an impossible position from the other side breaks it") {
  SUBCASE("the reader consumes more than was published") {
    auto [reader, writer] = make_pair();
    put(writer, "abc");
    writer.publish();
    reader.consume(10);
    CHECK(writer.room().empty());
    CHECK(writer.broken());
  }
  SUBCASE("the writer publishes more than the ring holds") {
    auto [reader, writer] = make_pair();
    writer.stage(capacity + 1);
    writer.publish();
    CHECK(reader.data().empty());
    CHECK(reader.broken());
  }
}

TEST_CASE("ring: attach takes only a sealed memfd of the ring's size") {
  std::string error;
  SUBCASE("a regular file") {
    popd::testing::TempDir dir;
    popd::testing::write_file(dir.path + "/f", std::string(4096 + capacity, '\0'));
    CHECK(!Ring::attach(UniqueFd(::open((dir.path + "/f").c_str(), O_RDWR)), error));
  }
  SUBCASE("an unsealed memfd") {
    UniqueFd fd(::memfd_create("t", MFD_CLOEXEC));
    REQUIRE(::ftruncate(fd.get(), static_cast<off_t>(::sysconf(_SC_PAGESIZE) + capacity)) == 0);
    CHECK(!Ring::attach(std::move(fd), error));
  }
  SUBCASE("a sealed memfd of another size") {
    UniqueFd fd(::memfd_create("t", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    REQUIRE(::ftruncate(fd.get(), 4096) == 0);
    REQUIRE(::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) == 0);
    CHECK(!Ring::attach(std::move(fd), error));
  }
  SUBCASE("a socket") {
    int pair[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, pair) == 0);
    ::close(pair[1]);
    CHECK(!Ring::attach(UniqueFd(pair[0]), error));
  }
}

TEST_CASE("ring: 64 MiB from another process, in odd pieces, with wake-ups through sockets") {
  std::string error;
  auto reader = Ring::create(error);
  REQUIRE(reader);
  int bell[2];  // writer -> reader: data published; reader -> writer: room made
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, bell) == 0);
  const std::size_t total = 64 << 20;
  const std::string source = pattern(1 << 20, 3);
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {  // the writer
    ::close(bell[0]);
    auto writer = Ring::attach(UniqueFd(::dup(reader->fd())), error);
    if (!writer) ::_exit(2);
    char byte;
    for (std::size_t sent = 0, piece = 1; sent < total;) {
      auto room = writer->room();
      if (room.empty()) {
        if (writer->publish()) (void)!::write(bell[1], "w", 1);
        if (writer->prepare_to_wait_for_room()) {
          pollfd p{bell[1], POLLIN, 0};
          if (::poll(&p, 1, 10000) != 1 || ::read(bell[1], &byte, 1) != 1) ::_exit(3);  // a lost wake-up
        }
        continue;
      }
      std::size_t size = std::min<std::size_t>({room.size(), total - sent, piece});
      for (std::size_t i = 0; i < size; ++i) room[i] = source[(sent + i) % source.size()];
      writer->stage(size);
      sent += size;
      piece = piece * 7 % 100003 + 1;
      if (writer->staged() > 30000 && writer->publish()) (void)!::write(bell[1], "w", 1);
    }
    if (writer->publish()) (void)!::write(bell[1], "w", 1);
    ::_exit(0);
  }
  ::close(bell[1]);
  std::size_t received = 0;
  bool same = true;
  char byte;
  while (received < total) {
    auto data = reader->data();
    REQUIRE(!reader->broken());
    if (data.empty()) {
      if (reader->prepare_to_wait_for_data()) {
        pollfd p{bell[0], POLLIN, 0};
        REQUIRE_MESSAGE(::poll(&p, 1, 10000) == 1, "a lost wake-up");
        REQUIRE(::read(bell[0], &byte, 1) == 1);
      }
      continue;
    }
    std::size_t size = std::min<std::size_t>(data.size(), 16384);
    for (std::size_t i = 0; i < size && same; ++i) same = data[i] == source[(received + i) % source.size()];
    received += size;
    if (reader->consume(size)) (void)!::write(bell[0], "r", 1);
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(same);
  CHECK(received == total);
  ::close(bell[0]);
}
