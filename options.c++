#include "options.h"

#include <charconv>
#include <string_view>

#include "mailbox/spool.h"
#include "params.h"

namespace popd {

namespace {
constexpr std::string_view version = "popd 0.1.0";
}

std::string usage() {
  return R"(Usage: popd [OPTION]...
POP3 server for mbox spools: one session on standard input and output,
as started by xinetd or systemd socket activation (Accept=yes).

  --mailbox TEMPLATE     mailbox path; %u is the user name, %h the home
                         directory, %% a percent sign (default /var/mail/%u)
  --journal TEMPLATE     recovery journal for interrupted commits
                         (default %h/.popd-journal)
  --pam-service NAME     PAM service name (default popd)
  --timeout SECONDS      idle timeout (default 600, RFC 1939's minimum)
  --failure-delay SECONDS
                         delay before answering a failed login (default 2;
                         fractions allowed)
  --help                 show this help and exit
  --version              show the version and exit
)";
}

std::variant<Options, Exit> parse_options(int argc, const char* const* argv) {
  Options options;
  auto bad = [](std::string message) { return Exit{2, "popd: " + message + "\n" + usage()}; };
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    std::string_view name = arg, value;
    bool has_value = false;
    if (auto equals = arg.find('='); arg.starts_with("--") && equals != std::string_view::npos) {
      name = arg.substr(0, equals);
      value = arg.substr(equals + 1);
      has_value = true;
    }
    if (name == "--help") return Exit{0, usage()};
    if (name == "--version") return Exit{0, std::string(version) + "\n"};

    std::string* target = nullptr;
    if (name == "--mailbox") target = &options.mailbox;
    else if (name == "--journal") target = &options.journal;
    else if (name == "--pam-service") target = &options.pam_service;
    else if (name != "--timeout" && name != "--failure-delay")
      return bad("unknown option " + std::string(arg));

    if (!has_value) {
      if (i + 1 == argc) return bad(std::string(name) + " needs a value");
      value = argv[++i];
    }
    if (target) {
      *target = value;
      if (target != &options.pam_service && !mailbox::valid_path_template(value))
        return bad("bad path template for " + std::string(name) + ": only %u, %h and %% may follow %");
      if (target == &options.pam_service && value.empty()) return bad("empty PAM service name");
      continue;
    }
    double seconds = 0;
    auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), seconds);
    bool valid = error == std::errc() && end == value.data() + value.size() && seconds >= 0 &&
                 seconds <= 24 * 3600;
    if (name == "--timeout") {
      if (!valid || seconds < 1 || seconds != static_cast<int>(seconds))
        return bad("--timeout needs a whole number of seconds from 1 to 86400");
      options.timeout_seconds = static_cast<int>(seconds);
    } else {
      if (!valid) return bad("--failure-delay needs a number of seconds from 0 to 86400");
      options.failure_delay = std::chrono::milliseconds(static_cast<long>(seconds * 1000));
    }
  }
  return options;
}

}  // namespace popd
