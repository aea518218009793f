// A byte range [begin, end) of a mailbox file: what a commit removes.
#pragma once

#include <cstdint>

namespace popd::mailbox {

struct Range {
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
};

}  // namespace popd::mailbox
