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

TEST_CASE("options: what administrators coming from Dovecot look for (issue 34)") {
  auto defaults = std::get<Options>(parse({}));
  CHECK(defaults.expire_days == -1);
  CHECK(defaults.max_per_ip == 0);
  CHECK(defaults.login_delay_seconds == 0);
  CHECK_FALSE(defaults.outlook_no_nuls);
  CHECK_FALSE(defaults.oe_ns_eoh);
  CHECK(defaults.trace_dir.empty());

  auto set = std::get<Options>(parse({"--expire", "0", "--max-per-ip=10000", "--login-delay", "900",
                                      "--workaround", "oe-ns-eoh,outlook-no-nuls", "--trace-dir", "/t/%d/%n"}));
  CHECK(set.expire_days == 0);
  CHECK(set.max_per_ip == 10000);
  CHECK(set.login_delay_seconds == 900);
  CHECK(set.outlook_no_nuls);
  CHECK(set.oe_ns_eoh);
  CHECK(set.trace_dir == "/t/%d/%n");
  CHECK(std::get<Options>(parse({"--expire=36500"})).expire_days == 36500);
  CHECK(std::get<Options>(parse({"--expire", "30", "--expire", "never"})).expire_days == -1);

  const std::string expire = "popd: --expire needs a number of days from 0 to 36500, or never";
  for (const char* bad : {"36501", "-1", "7d", "NEVER", " 7"}) CHECK(refusal({"--expire", bad}) == expire);
  for (const char* bad : {"10001", "-1", "3.5"})
    CHECK(refusal({"--max-per-ip", bad}) == "popd: --max-per-ip needs a number from 0 to 10000");
  for (const char* bad : {"1.5", "86401", "-1"})
    CHECK(refusal({"--login-delay", bad}) == "popd: --login-delay needs a whole number of seconds from 0 to 86400");
  for (const char* bad : {"outlook", "oe-ns-eoh,,outlook-no-nuls", "OE-NS-EOH"})
    CHECK(refusal({"--workaround", bad}) == "popd: --workaround takes outlook-no-nuls and oe-ns-eoh, comma-separated");
  // Expanded by the monitor before any account is looked up: no %h, and
  // never relative to wherever popd was started.
  const std::string trace = "popd: --trace-dir needs an absolute directory; only %u, %n, %d and %% may follow %";
  for (const char* bad : {"trace/%u", "/t/%h", "/t/%x", "/t/%"}) CHECK(refusal({"--trace-dir", bad}) == trace);
  CHECK(std::get<Options>(parse({"--trace-dir", "/t/%%h"})).trace_dir == "/t/%%h");
}
