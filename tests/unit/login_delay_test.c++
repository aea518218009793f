// --login-delay's per-user record of the last login.
#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include "server/login_delay.h"
#include "tests/unit/files.h"

using namespace popd::server;
using namespace popd::testing;
using namespace std::chrono_literals;

TEST_CASE("login delay: none before the first login, the rest of it after one, none once it passed") {
  TempDir dir;
  std::string stamp = dir.path + "/.popd-index.last-login";
  auto now = std::chrono::system_clock::now();
  CHECK(login_delay_left(stamp, ::geteuid(), 300s, now).wait == 0s);
  std::string error;
  REQUIRE(record_login(stamp, ::geteuid(), now, error));
  CHECK(login_delay_left(stamp, ::geteuid(), 300s, now).wait == 300s);
  CHECK(login_delay_left(stamp, ::geteuid(), 300s, now + 100s).wait == 200s);
  CHECK(login_delay_left(stamp, ::geteuid(), 300s, now + 299s + 500ms).wait == 1s);  // rounded up
  CHECK(login_delay_left(stamp, ::geteuid(), 300s, now + 300s).wait == 0s);
  // A clock set back: the recorded time is in the future, and not held against the user.
  CHECK(login_delay_left(stamp, ::geteuid(), 300s, now - 1h).wait == 0s);
  // Recorded again: the delay starts anew.
  REQUIRE(record_login(stamp, ::geteuid(), now + 1000s, error));
  CHECK(login_delay_left(stamp, ::geteuid(), 300s, now + 1100s).wait == 200s);
}

TEST_CASE("login delay: a stamp that is not the user's own is ignored with a note, and not written") {
  TempDir dir;
  std::string target = dir.path + "/target", stamp = dir.path + "/stamp";
  write_file(target, "");
  REQUIRE(::symlink(target.c_str(), stamp.c_str()) == 0);
  auto now = std::chrono::system_clock::now();
  LoginDelay left = login_delay_left(stamp, ::geteuid(), 300s, now);
  CHECK(left.wait == 0s);
  CHECK(left.note.find("symbolic link") != std::string::npos);
  std::string error;
  CHECK(!record_login(stamp, ::geteuid(), now, error));
  CHECK(error.find("symbolic link") != std::string::npos);
  // Another user's file, as root can make it.
  if (::geteuid() == 0) {
    std::string others = dir.path + "/others";
    write_file(others, "");
    REQUIRE(::chown(others.c_str(), 12345, 12345) == 0);
    CHECK(!login_delay_left(others, 0, 300s, now).note.empty());
    CHECK(!record_login(others, 0, now, error));
  }
}
