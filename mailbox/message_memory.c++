#include "mailbox/message_memory.h"

#include <sys/mman.h>

#include <algorithm>
#include <mutex>
#include <new>
#include <utility>

#include "params.h"

namespace popd::mailbox::message_memory {
namespace {

// Two threads parse a large mailbox (mailbox/mbox/mbox.h): one lock for both.
struct Pool {
  std::mutex mutex;
  struct Free {
    Free* next;
  };
  Free* free = nullptr;        // blocks given back
  char* next = nullptr;        // the unused rest of the newest chunk
  char* end = nullptr;
  std::size_t chunk = params::message_chunk_first;

  void* take() {
    std::lock_guard lock(mutex);
    if (free) return std::exchange(free, free->next);
    if (end - next < static_cast<std::ptrdiff_t>(block_size)) map_chunk();
    return std::exchange(next, next + block_size);
  }

  void give_back(void* block) {
    std::lock_guard lock(mutex);
    free = new (block) Free{free};
  }

  // The rest of the current chunk is left unused: less than a block.
  void map_chunk() {
    void* mapped = ::mmap(nullptr, chunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (mapped == MAP_FAILED) throw std::bad_alloc();
    next = static_cast<char*>(mapped);
    end = next + chunk;
    chunk = std::min(chunk * 2, params::message_chunk_max);
  }
};

Pool& pool() {
  static Pool* const the_pool = new Pool;  // never destroyed: blocks may be freed at exit
  return *the_pool;
}

}  // namespace

void* allocate(std::size_t bytes) {
  if (!pooled || bytes > block_size) return ::operator new(bytes);
  return pool().take();
}

void deallocate(void* block, std::size_t bytes) noexcept {
  if (!pooled || bytes > block_size) return ::operator delete(block);
  pool().give_back(block);
}

}  // namespace popd::mailbox::message_memory
