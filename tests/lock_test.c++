#include "mailbox/lock.h"

#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include "tests/files.h"

using popd::mailbox::DotLock;
using popd::mailbox::spool_directory_group;
using popd::testing::exists;
using popd::testing::TempDir;
using popd::testing::write_file;

namespace {

// A directory made by root with this mode and group.
std::string directory(const std::string& path, mode_t mode, gid_t group) {
  REQUIRE(::mkdir(path.c_str(), 0700) == 0);
  REQUIRE(::chown(path.c_str(), 0, group) == 0);
  REQUIRE(::chmod(path.c_str(), mode) == 0);
  return path;
}

}  // namespace

TEST_CASE("spool_directory_group: only a directory that root owns and only its group may write") {
  CHECK_FALSE(spool_directory_group("relative/alice"));
  if (::geteuid() != 0) {
    MESSAGE("the rest needs root: directories owned by root and a group");
    return;
  }
  constexpr gid_t mail = 8;
  TempDir tmp;  // in /tmp: sticky, so root's entries in it cannot be replaced
  ::chmod(tmp.path.c_str(), 0755);
  std::string spool = directory(tmp.path + "/mail", 02775, mail);
  CHECK(spool_directory_group(spool + "/alice") == mail);
  CHECK(spool_directory_group(tmp.path + "//mail/alice") == mail);
  CHECK_FALSE(spool_directory_group(tmp.path + "/mail/../mail/alice"));
  CHECK_FALSE(spool_directory_group(tmp.path + "/./mail/alice"));

  SUBCASE("writable by others, or by nobody but root, or by root's group: the session locks itself") {
    ::chmod(spool.c_str(), 01777);
    CHECK_FALSE(spool_directory_group(spool + "/alice"));
    ::chmod(spool.c_str(), 0755);
    CHECK_FALSE(spool_directory_group(spool + "/alice"));
    ::chmod(spool.c_str(), 02775);
    REQUIRE(::chown(spool.c_str(), 0, 0) == 0);
    CHECK_FALSE(spool_directory_group(spool + "/alice"));
  }
  SUBCASE("not root's") {
    REQUIRE(::chown(spool.c_str(), 12345, mail) == 0);
    CHECK_FALSE(spool_directory_group(spool + "/alice"));
  }
  SUBCASE("a directory above it that others may change, unless it is sticky") {
    ::chmod(tmp.path.c_str(), 0775);
    CHECK_FALSE(spool_directory_group(spool + "/alice"));
    ::chmod(tmp.path.c_str(), 0757);
    CHECK_FALSE(spool_directory_group(spool + "/alice"));
    ::chmod(tmp.path.c_str(), 01777);
    CHECK(spool_directory_group(spool + "/alice") == mail);
    REQUIRE(::chown(tmp.path.c_str(), 12345, 0) == 0);
    CHECK_FALSE(spool_directory_group(spool + "/alice"));
  }
  SUBCASE("a symbolic link on the way") {
    REQUIRE(::symlink(spool.c_str(), (tmp.path + "/link").c_str()) == 0);
    CHECK_FALSE(spool_directory_group(tmp.path + "/link/alice"));
    std::string inner = directory(spool + "/inner", 0755, 0);
    CHECK_FALSE(spool_directory_group(inner + "/alice"));  // not writable by the group
    ::chmod(inner.c_str(), 0775);
    REQUIRE(::chown(inner.c_str(), 0, mail) == 0);
    CHECK_FALSE(spool_directory_group(inner + "/alice"));  // below one the group may change
  }
}

TEST_CASE("a dotlock held elsewhere is kept fresh and never removed") {
  TempDir tmp;
  std::string mailbox = tmp.path + "/alice";
  write_file(mailbox + ".lock", "1\n");
  struct stat before {};
  REQUIRE(::stat((mailbox + ".lock").c_str(), &before) == 0);
  {
    DotLock lock = DotLock::held_elsewhere(mailbox);
    CHECK(lock.held());
    ::usleep(20'000);
    lock.refresh();
    struct stat after {};
    REQUIRE(::stat((mailbox + ".lock").c_str(), &after) == 0);
    CHECK((after.st_mtim.tv_sec > before.st_mtim.tv_sec ||
           (after.st_mtim.tv_sec == before.st_mtim.tv_sec && after.st_mtim.tv_nsec > before.st_mtim.tv_nsec)));
    lock.release();
    CHECK_FALSE(lock.held());
  }
  CHECK(exists(mailbox + ".lock"));
  // One this process took is removed with it.
  ::unlink((mailbox + ".lock").c_str());
  {
    DotLock lock;
    std::string error, note;
    REQUIRE(DotLock::acquire(mailbox, lock, error, note) == popd::mailbox::LockStatus::locked);
    CHECK(exists(mailbox + ".lock"));
    DotLock moved = std::move(lock);
    CHECK_FALSE(lock.held());
  }
  CHECK_FALSE(exists(mailbox + ".lock"));
}
