#include "mailbox/lock.h"

#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ctime>

#include "tests/unit/files.h"

using popd::mailbox::DotLock;
using popd::mailbox::spool_directory_group;
using popd::testing::exists;
using popd::testing::read_file;
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

TEST_CASE("a dotlock held elsewhere is left to its holder; one this process took it keeps fresh and removes") {
  TempDir tmp;
  std::string mailbox = tmp.path + "/alice", path = mailbox + ".lock";
  auto modified = [&] {
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    return st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec;
  };
  write_file(path, "1\n");
  auto before = modified();
  {
    DotLock lock = DotLock::held_elsewhere(mailbox);
    CHECK(lock.held());
    ::usleep(20'000);
    lock.refresh();
    CHECK(modified() == before);
    lock.release();
    CHECK_FALSE(lock.held());
  }
  CHECK(exists(path));
  ::unlink(path.c_str());
  {
    DotLock lock;
    std::string error, note;
    REQUIRE(DotLock::acquire(mailbox, lock, error, note) == popd::mailbox::LockStatus::locked);
    CHECK(exists(path));
    before = modified();
    ::usleep(20'000);
    lock.refresh();
    CHECK(modified() > before);
    ::usleep(20'000);
    lock.refresh();  // it knows its lock after its own refresh
    DotLock moved = std::move(lock);
    CHECK_FALSE(lock.held());
  }
  CHECK_FALSE(exists(path));
}

namespace {

// A lock file as another host, or a crashed process, left it: `pid` in it,
// its time `age_seconds` ago.
void plant_lock(const std::string& path, const std::string& pid, int age_seconds) {
  write_file(path, pid + "\n");
  timespec times[2];
  ::clock_gettime(CLOCK_REALTIME, &times[0]);
  times[0].tv_sec -= age_seconds;
  times[1] = times[0];
  REQUIRE(::utimensat(AT_FDCWD, path.c_str(), times, 0) == 0);
}

popd::mailbox::LockStatus try_lock(const std::string& mailbox, DotLock& lock, bool shared) {
  std::string error, note;
  return DotLock::acquire(mailbox, lock, error, note, shared);
}

}  // namespace

TEST_CASE("a shared spool's dotlock is stale by age only: a pid says nothing about another host's lock") {
  using popd::mailbox::LockStatus;
  TempDir tmp;
  std::string mailbox = tmp.path + "/alice", path = mailbox + ".lock";
  pid_t dead = 999'999'999;  // above pid_max: no such process here
  SUBCASE("a fresh lock with a pid that is not alive here: held on a shared spool, stale on a local one") {
    plant_lock(path, std::to_string(dead), 10);
    DotLock lock;
    CHECK(try_lock(mailbox, lock, true) == LockStatus::busy);
    CHECK(read_file(path) == std::to_string(dead) + "\n");
    CHECK(try_lock(mailbox, lock, false) == LockStatus::locked);
  }
  SUBCASE("an old lock with a live pid: stale on a shared spool, held on a local one") {
    plant_lock(path, std::to_string(::getpid()), 6 * 60);
    DotLock lock;
    CHECK(try_lock(mailbox, lock, false) == LockStatus::busy);
    CHECK(try_lock(mailbox, lock, true) == LockStatus::locked);
    CHECK(read_file(path) == "0\n");  // no pid of ours either
  }
  CHECK_FALSE(popd::mailbox::on_shared_file_system(mailbox));  // /tmp is local
}

TEST_CASE("a dotlock that was taken over is neither refreshed nor removed by its first holder") {
  TempDir tmp;
  std::string mailbox = tmp.path + "/alice", path = mailbox + ".lock";
  DotLock lock;
  REQUIRE(try_lock(mailbox, lock, true) == popd::mailbox::LockStatus::locked);
  // Another host took it over as stale (by age: minutes later; the inode
  // number may come back, the change time does not).
  ::usleep(30'000);
  REQUIRE(::unlink(path.c_str()) == 0);
  plant_lock(path, "0", 60);
  struct stat before {};
  REQUIRE(::stat(path.c_str(), &before) == 0);
  lock.refresh();
  struct stat after {};
  REQUIRE(::stat(path.c_str(), &after) == 0);
  CHECK(after.st_mtim.tv_sec == before.st_mtim.tv_sec);
  lock.release();
  CHECK(exists(path));
}
