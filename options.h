// The command line: popd's public contract, documented in --help and popd.8.
#pragma once

#include <chrono>
#include <string>
#include <variant>

namespace popd {

struct Options {
  std::string mailbox = "/var/mail/%u";
  std::string journal = "%h/.popd-journal";
  std::string pam_service = "popd";
  int timeout_seconds = 600;
  std::chrono::milliseconds failure_delay{2000};
};

// What to do instead of serving: print `text` to stdout (status 0) or
// stderr (status 2) and exit.
struct Exit {
  int status;
  std::string text;
};

std::variant<Options, Exit> parse_options(int argc, const char* const* argv);
std::string usage();

}  // namespace popd
