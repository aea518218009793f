// popd: a POP3 server for mbox spools. Entry point: options and wiring.
#include <cstdio>
#include <variant>

#include "options.h"
#include "server/session.h"

int main(int argc, char** argv) {
  auto parsed = popd::parse_options(argc, argv);
  if (auto* exit = std::get_if<popd::Exit>(&parsed)) {
    std::fputs(exit->text.c_str(), exit->status == 0 ? stdout : stderr);
    return exit->status;
  }
  return popd::server::serve(std::get<popd::Options>(parsed));
}
