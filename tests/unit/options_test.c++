// The command line (options.h): popd's public contract. Each refusal names
// what is wrong; path templates know %u, %n, %d, %h and %% only.
#include <doctest/doctest.h>

#include <array>
#include <string>
#include <variant>
#include <vector>

#include "options.h"

using namespace popd;

namespace {

std::variant<Options, Exit> parse(std::vector<const char*> args) {
  args.insert(args.begin(), "popd");
  return parse_options(static_cast<int>(args.size()), args.data());
}

std::string refusal(std::vector<const char*> args) {
  auto result = parse(std::move(args));
  auto* exit = std::get_if<Exit>(&result);
  if (!exit || exit->status != 2) return "";
  return exit->text.substr(0, exit->text.find('\n'));
}

}  // namespace

TEST_CASE("options: defaults, both spellings of a value, flags") {
  auto defaults = std::get<Options>(parse({}));
  CHECK(defaults.mailbox == "/var/mail/%u");
  CHECK(defaults.timeout_seconds == 600);
  auto set = std::get<Options>(parse({"--mailbox=%h/mbox", "--timeout", "30", "--shared-spool",
                                      "--failure-delay=0.5", "--first-valid-uid", "1000"}));
  CHECK(set.mailbox == "%h/mbox");
  CHECK(set.timeout_seconds == 30);
  CHECK(set.shared_spool);
  CHECK(set.failure_delay.count() == 500);
  CHECK(set.first_valid_uid == 1000u);
  CHECK(std::get<Exit>(parse({"--help"})).status == 0);
}

TEST_CASE("options: each refusal says what is wrong") {
  CHECK(refusal({"--bogus"}) == "popd: unknown option --bogus");
  CHECK(refusal({"--mailbox"}) == "popd: --mailbox needs a value");
  CHECK(refusal({"--mailbox="}) == "popd: --mailbox needs a value");
  CHECK(refusal({"--shared-spool=yes"}) == "popd: --shared-spool takes no value");
  CHECK(refusal({"--timeout", "1.5"}) == "popd: --timeout needs a whole number of seconds from 1 to 86400");
  CHECK(refusal({"--first-valid-uid", "0"}) == "popd: --first-valid-uid needs a uid from 1 to 4294967294");
  CHECK(refusal({"--journal", "%x/j"}).starts_with("popd: bad path template for --journal"));
  CHECK(refusal({"--uidl-scheme", "md5"}).starts_with("popd: --uidl-scheme is"));
  CHECK(refusal({"--tls-cert", "c.pem"}) == "popd: --tls-cert and --tls-key go together");
  CHECK(refusal({"--require-tls"}) == "popd: --tls-implicit and --require-tls need --tls-cert and --tls-key");
  CHECK(refusal({"--proxy-from", "300.1.1.1"}).starts_with("popd: --proxy-from needs"));
}

TEST_CASE("options: path templates") {
  CHECK(expand_path("/var/mail/%u", "alice", "/home/alice") == "/var/mail/alice");
  CHECK(expand_path("%h/.popd-%u%%", "bob", "/h/b") == "/h/b/.popd-bob%");
  CHECK(expand_path("trailing%", "a", "h") == "trailing%");
  CHECK(valid_path_template("/var/mail/%u"));
  CHECK(valid_path_template("%h/%%"));
  CHECK_FALSE(valid_path_template(""));
  CHECK(valid_path_template("/var/vmail/%d/%n"));
  CHECK_FALSE(valid_path_template("%x/y"));
  CHECK_FALSE(valid_path_template("x%"));
  // Virtual users: %n the name before '@', %d the domain after it.
  CHECK(expand_path("/v/%d/%n/%u", "ann@example.org", "") == "/v/example.org/ann/ann@example.org");
  CHECK(expand_path("/v/%d/%n", "ann", "") == "/v//ann");
}

TEST_CASE("options: virtual users") {
  auto parsed = parse_options(5, std::array<const char*, 5>{"popd", "--userdb", "passwd-file:/etc/popd/%d",
                                                           "--mail-user", "vmail"}.data());
  REQUIRE(std::holds_alternative<Options>(parsed));
  CHECK(std::get<Options>(parsed).passwd_file == "/etc/popd/%d");
  CHECK(std::get<Options>(parsed).mail_user == "vmail");
  for (auto args : {std::array<const char*, 3>{"popd", "--userdb", "passwd-file:relative"},
                    std::array<const char*, 3>{"popd", "--userdb", "ldap"},
                    std::array<const char*, 3>{"popd", "--mail-user", "vmail"},
                    std::array<const char*, 3>{"popd", "--home", "/v/%d/%n"}}) {
    CAPTURE(std::string(args[1]));
    CHECK(std::holds_alternative<Exit>(parse_options(3, args.data())));
  }
  for (auto args : {std::array<const char*, 5>{"popd", "--userdb", "passwd-file:/etc/%x/users", "--home", "/v"},
                    std::array<const char*, 5>{"popd", "--userdb", "passwd-file:/etc/%h/users", "--home", "/v"},
                    std::array<const char*, 5>{"popd", "--userdb", "passwd-file:/etc/users", "--home", "v/%n"},
                    std::array<const char*, 5>{"popd", "--userdb", "passwd-file:/etc/users", "--home", "/v/%h"}}) {
    CAPTURE(std::string(args[2]) + " " + args[4]);
    CHECK(std::holds_alternative<Exit>(parse_options(5, args.data())));
  }
  CHECK(std::holds_alternative<Options>(parse_options(
      5, std::array<const char*, 5>{"popd", "--userdb", "passwd-file:/etc/%d/users", "--home", "/v/%d/%n"}.data())));
  CHECK(std::holds_alternative<Options>(parse_options(3, std::array<const char*, 3>{"popd", "--userdb", "pam"}.data())));
}
