#include "sys/huge_pages.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "params.h"

namespace popd::sys {
namespace {

// The C library's mmap under its other name: in popd's binary the name
// mmap is the hook that calls us.
void* raw_mmap(void* address, std::size_t length, int protection, int flags) {
  return ::mmap64(address, length, protection, flags, -1, 0);
}

}  // namespace

bool wants_huge_pages(void* address, std::size_t length, int protection, int flags, int fd, long offset) {
  return !address && fd == -1 && offset == 0 && flags == (MAP_PRIVATE | MAP_ANONYMOUS) &&
         protection == (PROT_READ | PROT_WRITE) && length >= params::huge_mapping_min &&
         length <= SIZE_MAX / 2;
}

void* map_huge_aligned(std::size_t length) {
  constexpr int protection = PROT_READ | PROT_WRITE, flags = MAP_PRIVATE | MAP_ANONYMOUS;
  const std::size_t page = ::sysconf(_SC_PAGESIZE);
  const std::size_t span = (length + page - 1) / page * page;
  // Map a huge page more than needed, then give back the ends around the
  // aligned part.
  auto* mapped = static_cast<char*>(raw_mmap(nullptr, span + params::huge_page, protection, flags));
  if (mapped == MAP_FAILED) return raw_mmap(nullptr, length, protection, flags);
  int saved_errno = errno;
  auto start = reinterpret_cast<std::uintptr_t>(mapped);
  auto* aligned = reinterpret_cast<char*>((start + params::huge_page - 1) & ~(params::huge_page - 1));
  if (aligned != mapped) ::munmap(mapped, aligned - mapped);
  char* end = mapped + span + params::huge_page;
  if (aligned + span != end) ::munmap(aligned + span, end - (aligned + span));
  ::madvise(aligned, span, MADV_HUGEPAGE);  // refused where the kernel has no THP: then small pages
  errno = saved_errno;
  return aligned;
}

}  // namespace popd::sys
