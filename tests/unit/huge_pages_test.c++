#include "sys/huge_pages.h"

#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include "params.h"

using popd::sys::map_huge_aligned;
using popd::sys::wants_huge_pages;

namespace {

constexpr int rw = PROT_READ | PROT_WRITE, anonymous = MAP_PRIVATE | MAP_ANONYMOUS;

// The /proc/self/smaps lines of the mapping that starts at `start`.
std::string smaps_entry(const void* start) {
  char head[32];
  std::snprintf(head, sizeof head, "%lx-", static_cast<unsigned long>(reinterpret_cast<std::uintptr_t>(start)));
  std::ifstream smaps("/proc/self/smaps");
  std::string line, entry;
  bool inside = false;
  while (std::getline(smaps, line)) {
    // A mapping's first line starts with its address in lower-case hex;
    // its fields ("Size:", "VmFlags:") with a capital.
    bool header = !line.empty() && (std::isdigit(static_cast<unsigned char>(line[0])) || (line[0] >= 'a' && line[0] <= 'f'));
    if (header) inside = line.starts_with(head);
    if (inside) entry += line + "\n";
  }
  return entry;
}

// The process's mapped memory in kB, read without allocating.
long vm_size_kb() {
  char text[8192];
  int fd = ::open("/proc/self/status", O_RDONLY);
  REQUIRE(fd >= 0);
  ssize_t n = ::read(fd, text, sizeof text - 1);
  ::close(fd);
  REQUIRE(n > 0);
  text[n] = '\0';
  const char* field = std::strstr(text, "VmSize:");
  REQUIRE(field);
  return std::strtol(field + 7, nullptr, 10);
}

bool mapped(const void* address) {
  unsigned char resident;
  return ::mincore(const_cast<void*>(address), 1, &resident) == 0 || errno != ENOMEM;
}

}  // namespace

TEST_CASE("wants_huge_pages: large private anonymous read-write memory, nothing else") {
  const std::size_t large = 16 << 20;
  CHECK(wants_huge_pages(nullptr, large, rw, anonymous, -1, 0));
  CHECK(wants_huge_pages(nullptr, popd::params::huge_mapping_min, rw, anonymous, -1, 0));
  CHECK_FALSE(wants_huge_pages(nullptr, popd::params::huge_mapping_min - 1, rw, anonymous, -1, 0));
  CHECK_FALSE(wants_huge_pages(reinterpret_cast<void*>(0x10000000), large, rw, anonymous, -1, 0));
  CHECK_FALSE(wants_huge_pages(nullptr, large, PROT_NONE, anonymous, -1, 0));
  CHECK_FALSE(wants_huge_pages(nullptr, large, PROT_READ, anonymous, -1, 0));
  CHECK_FALSE(wants_huge_pages(nullptr, large, rw | PROT_EXEC, anonymous, -1, 0));
  CHECK_FALSE(wants_huge_pages(nullptr, large, rw, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  CHECK_FALSE(wants_huge_pages(nullptr, large, rw, anonymous | MAP_NORESERVE, -1, 0));
  CHECK_FALSE(wants_huge_pages(nullptr, large, rw, anonymous | MAP_FIXED, -1, 0));
  CHECK_FALSE(wants_huge_pages(nullptr, large, rw, MAP_PRIVATE, 3, 0));
  CHECK_FALSE(wants_huge_pages(nullptr, SIZE_MAX, rw, anonymous, -1, 0));
}

TEST_CASE("map_huge_aligned: the length asked for, on a huge page boundary, advised, all released by munmap") {
  const std::size_t page = ::sysconf(_SC_PAGESIZE);
  // yescrypt's: 16 MiB and 24 KiB and 64 bytes, not a whole number of pages.
  for (std::size_t length : {std::size_t{16801856}, std::size_t{8} << 20, (std::size_t{8} << 20) + 1}) {
    CAPTURE(length);
    const std::size_t span = (length + page - 1) / page * page;
    long before = vm_size_kb();
    auto* memory = static_cast<char*>(map_huge_aligned(length));
    long after = vm_size_kb();
    REQUIRE(memory != MAP_FAILED);
    CHECK(reinterpret_cast<std::uintptr_t>(memory) % popd::params::huge_page == 0);
    // Exactly the span: nothing of the extra huge page stays mapped around it.
    CHECK(after - before == static_cast<long>(span / 1024));
    std::memset(memory, 0x5a, length);
    CHECK(memory[length - 1] == 0x5a);
    if (::access("/sys/kernel/mm/transparent_hugepage/enabled", F_OK) == 0) {
      std::string entry = smaps_entry(memory);
      REQUIRE(entry.find("VmFlags:") != std::string::npos);
      CHECK(entry.substr(entry.find("VmFlags:")).find(" hg") != std::string::npos);  // MADV_HUGEPAGE
    }
    REQUIRE(::munmap(memory, length) == 0);
    CHECK(vm_size_kb() == before);
    CHECK_FALSE(mapped(memory));
    CHECK_FALSE(mapped(memory + span - page));
  }
}
