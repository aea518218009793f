#include "server/hash_password.h"

#include <termios.h>
#include <unistd.h>

#include <cstdio>
#include <optional>

#include <openssl/crypto.h>

#include "auth/password.h"
#include "params.h"

namespace popd::server {
namespace {

// One line of standard input, without its line end (the rest of the
// input if it has none); nullopt past params::max_password.
std::optional<std::string> read_line() {
  std::string line;
  char c;
  while (::read(STDIN_FILENO, &c, 1) == 1 && c != '\n') {
    if (line.size() == params::max_password) return std::nullopt;
    line += c;
  }
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return line;
}

// Asked on the terminal with echo off.
std::optional<std::string> ask(const char* prompt) {
  std::fputs(prompt, stderr);
  termios saved, quiet;
  bool terminal = ::tcgetattr(STDIN_FILENO, &saved) == 0;
  quiet = saved;
  quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
  if (terminal) ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
  auto line = read_line();
  if (terminal) ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
  std::fputs("\n", stderr);
  return line;
}

}  // namespace

int hash_password_command(const std::string& scheme) {
  std::optional<std::string> password;
  if (::isatty(STDIN_FILENO)) {
    password = ask("Password: ");
    auto again = ask("Again: ");
    if (!password || !again || *password != *again) {
      std::fputs("popd: the passwords differ\n", stderr);
      return 1;
    }
    if (again) OPENSSL_cleanse(again->data(), again->size());
  } else {
    password = read_line();
  }
  if (!password || password->empty()) {
    std::fputs("popd: no password (or one longer than the limit) given\n", stderr);
    return 1;
  }
  auto field = auth::hash_password(*password, scheme);
  OPENSSL_cleanse(password->data(), password->size());
  if (!field) {
    std::fprintf(stderr, "popd: cannot hash a password in scheme %s\n", scheme.c_str());
    return 1;
  }
  std::printf("%s\n", field->c_str());
  return 0;
}

}  // namespace popd::server
