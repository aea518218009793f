// popd: a POP3 server for mbox spools. Entry point: options and wiring.
#include <malloc.h>

#include <cstdio>
#include <variant>

#include "options.h"
#include "params.h"
#include "server/serve.h"

int main(int argc, char** argv) {
  // Buffers of a MiB and more (reads, replies, a large message) come from
  // mmap and go back to the system when freed. glibc would otherwise raise
  // its threshold after the first such free, serve them from the heap,
  // and the heap would keep what a session once needed.
  ::mallopt(M_MMAP_THRESHOLD, popd::params::mmap_threshold);
  auto parsed = popd::parse_options(argc, argv);
  if (auto* exit = std::get_if<popd::Exit>(&parsed)) {
    std::fputs(exit->text.c_str(), exit->status == 0 ? stdout : stderr);
    return exit->status;
  }
  return popd::server::serve(std::get<popd::Options>(parsed));
}
