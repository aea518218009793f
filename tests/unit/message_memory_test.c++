#include "mailbox/message_memory.h"

#include <doctest/doctest.h>

#include <linux/perf_event.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <deque>
#include <optional>
#include <vector>

#include "sys/fd.h"

namespace memory = popd::mailbox::message_memory;
using popd::mailbox::MessageAllocator;

namespace {

bool resident(const void* address) {
  const std::uintptr_t page = ::sysconf(_SC_PAGESIZE);
  auto start = reinterpret_cast<std::uintptr_t>(address) & ~(page - 1);
  unsigned char in_core = 0;
  REQUIRE(::mincore(reinterpret_cast<void*>(start), page, &in_core) == 0);
  return in_core & 1;
}

// Page faults this thread takes from here on, as the kernel counts traps
// (memory populated by a system call is not counted); nothing where perf
// events are not allowed.
struct FaultCounter {
  popd::sys::UniqueFd fd;
  FaultCounter() {
    perf_event_attr attr{};
    attr.type = PERF_TYPE_SOFTWARE;
    attr.size = sizeof attr;
    attr.config = PERF_COUNT_SW_PAGE_FAULTS;
    attr.exclude_kernel = 0;
    fd.reset(static_cast<int>(::syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0)));
  }
  std::optional<std::uint64_t> count() const {
    std::uint64_t value = 0;
    if (!fd || ::read(fd.get(), &value, sizeof value) != sizeof value) return {};
    return value;
  }
};

}  // namespace

TEST_CASE("message memory: blocks are distinct, aligned, populated before use, and reused") {
  if (!memory::pooled) return;  // under AddressSanitizer: operator new
  constexpr std::size_t count = 5000;  // 2.5 MB: more than one chunk
  std::vector<char*> blocks;
  blocks.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    auto* block = static_cast<char*>(memory::allocate(memory::block_size));
    REQUIRE(reinterpret_cast<std::uintptr_t>(block) % alignof(std::max_align_t) == 0);
    // In memory before it is written: no page fault on first use.
    CHECK(resident(block));
    CHECK(resident(block + memory::block_size - 1));
    std::memset(block, static_cast<int>(i), memory::block_size);
    blocks.push_back(block);
  }
  std::vector<char*> sorted = blocks;
  std::sort(sorted.begin(), sorted.end());
  for (std::size_t i = 1; i < sorted.size(); ++i) CHECK(sorted[i] - sorted[i - 1] >= std::ptrdiff_t{memory::block_size});
  for (std::size_t i = 0; i < count; ++i) CHECK(blocks[i][memory::block_size - 1] == static_cast<char>(i));

  // A block given back is the next one handed out.
  memory::deallocate(blocks[17], memory::block_size);
  CHECK(memory::allocate(memory::block_size) == blocks[17]);
  for (char* block : blocks) memory::deallocate(block, memory::block_size);

  // Larger requests are ordinary allocations.
  auto* large = static_cast<char*>(memory::allocate(64 * 1024));
  std::memset(large, 1, 64 * 1024);
  memory::deallocate(large, 64 * 1024);
}

TEST_CASE("message memory: a list of 100,000 messages' worth of blocks takes few page faults") {
  if (!memory::pooled) return;
  constexpr std::size_t count = 20000;  // 10 MB, 2,500 pages
  std::vector<char*> blocks(count);
  FaultCounter faults;
  auto before = faults.count();
  if (!before) {
    MESSAGE("perf events not allowed here: page faults not counted");
    return;
  }
  for (char*& block : blocks) {
    block = static_cast<char*>(memory::allocate(memory::block_size));
    std::memset(block, 1, memory::block_size);
  }
  std::uint64_t taken = *faults.count() - *before;
  CHECK(taken < 100);
  for (char* block : blocks) memory::deallocate(block, memory::block_size);
}

TEST_CASE("message memory: the allocator serves a deque") {
  std::deque<std::uint64_t, MessageAllocator<std::uint64_t>> values;
  for (std::uint64_t i = 0; i < 100000; ++i) values.push_back(i);
  values.resize(10);
  std::deque<std::uint64_t, MessageAllocator<std::uint64_t>> moved = std::move(values);
  CHECK(moved.size() == 10);
  CHECK(moved.back() == 9);
  CHECK(MessageAllocator<int>() == MessageAllocator<char>());
}
