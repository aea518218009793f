#include "server/handover.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "params.h"
#include "sys/lifetime.h"

namespace popd::server::handover {
namespace {

using protocol::Login;

// The largest message: a login request, or a transcript (which may end
// in a note that it stopped at its limit).
constexpr std::size_t max_message =
    std::max(params::max_user_name + 1 + params::max_sasl_line + 64, 1 + params::max_preauth_trace + 256);
constexpr std::size_t max_fds = 2;

}  // namespace

bool send(int channel, std::string_view data, std::span<const int> fds) {
  iovec iov{const_cast<char*>(data.data()), data.size()};
  msghdr message{};
  message.msg_iov = &iov;
  message.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(max_fds * sizeof(int))] = {};
  if (!fds.empty() && fds.size() <= max_fds) {
    message.msg_control = control;
    message.msg_controllen = CMSG_SPACE(fds.size() * sizeof(int));
    cmsghdr* header = CMSG_FIRSTHDR(&message);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
    std::memcpy(CMSG_DATA(header), fds.data(), fds.size() * sizeof(int));
  }
  ssize_t n;
  while ((n = ::sendmsg(channel, &message, MSG_NOSIGNAL)) < 0 && errno == EINTR && !sys::stop_requested()) {
  }
  return n == static_cast<ssize_t>(data.size());
}

std::optional<std::string> receive(int channel, std::vector<sys::UniqueFd>* fds) {
  return receive(channel, fds, max_message);
}

std::optional<std::string> receive(int channel, std::vector<sys::UniqueFd>* fds, std::size_t size) {
  std::string data(size, '\0');
  iovec iov{data.data(), data.size()};
  msghdr message{};
  message.msg_iov = &iov;
  message.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(max_fds * sizeof(int))] = {};
  message.msg_control = control;
  message.msg_controllen = sizeof control;
  ssize_t n;
  while ((n = ::recvmsg(channel, &message, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR && !sys::stop_requested()) {
  }
  for (cmsghdr* header = CMSG_FIRSTHDR(&message); n >= 0 && header; header = CMSG_NXTHDR(&message, header)) {
    if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
    std::size_t count = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int received;
      std::memcpy(&received, CMSG_DATA(header) + i * sizeof(int), sizeof received);
      if (fds) fds->emplace_back(received);
      else ::close(received);
    }
  }
  if (n <= 0 || (message.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) return std::nullopt;
  data.resize(n);
  return data;
}

std::string encode_login_request(std::string_view user, std::string_view password) {
  std::string request(user);
  request += '\0';
  request += password;
  return request;
}

LoginRequest decode_login_request(std::string_view message) {
  auto nul = message.find('\0');
  LoginRequest request;
  request.user = message.substr(0, nul);
  request.complete = nul != std::string_view::npos;
  if (request.complete) request.password = message.substr(nul + 1);
  return request;
}

std::string encode_reply(const Login& login) {
  std::string reply;
  reply += static_cast<char>(login.outcome);
  reply += login.close ? '1' : '0';
  reply += login.text;
  return reply;
}

std::optional<Login> decode_reply(std::string_view message) {
  if (message.size() < 2 || message[0] < 0 || message[0] > static_cast<char>(Login::Outcome::handed_off))
    return std::nullopt;
  Login login;
  login.outcome = static_cast<Login::Outcome>(message[0]);
  login.close = message[1] == '1';
  login.text = message.substr(2);
  return login;
}

bool is_end_report(std::string_view message) { return message.starts_with(static_cast<char>(Tag::end_report)); }

std::string encode_end_report(Ending ending, bool tls) {
  return {static_cast<char>(Tag::end_report), static_cast<char>(ending), tls ? '1' : '0'};
}

EndReport decode_end_report(std::string_view message) {
  bool known = message.size() == 3 && message[1] >= 0 && message[1] <= static_cast<char>(Ending::lost);
  if (!known) return {};
  return {static_cast<Ending>(message[1]), message[2] == '1'};
}

std::string encode_trace(std::string_view transcript) {
  return std::string(1, static_cast<char>(Tag::trace)).append(transcript);
}

bool is_trace(std::string_view message) { return message.starts_with(static_cast<char>(Tag::trace)); }

std::string_view trace_of(std::string_view message) { return message.substr(1); }

std::string encode_handover(bool direct, Mechanism mechanism, std::string_view pending) {
  std::string message(1, static_cast<char>(direct ? Tag::direct : Tag::relay));
  message += static_cast<char>(mechanism);
  auto length = static_cast<std::uint32_t>(pending.size());
  message.append(reinterpret_cast<const char*>(&length), sizeof length);
  message += pending;
  return message;
}

std::optional<Header> decode_header(std::string_view header) {
  if (header.size() != header_size) return std::nullopt;
  auto mode = static_cast<Tag>(header[0]);
  auto mechanism = static_cast<Mechanism>(header[1]);
  std::uint32_t length;
  std::memcpy(&length, header.data() + 2, sizeof length);
  if ((mode != Tag::direct && mode != Tag::relay) || length > params::max_handover ||
      (mechanism != Mechanism::user && mechanism != Mechanism::sasl_plain && mechanism != Mechanism::sasl_login))
    return std::nullopt;
  return Header{mode == Tag::direct, mechanism, length};
}

const char* mechanism_name(Mechanism mechanism) {
  switch (mechanism) {
    case Mechanism::sasl_plain: return "sasl-plain";
    case Mechanism::sasl_login: return "sasl-login";
    default: return "user";
  }
}

Mechanism mechanism_of(std::string_view name) {
  if (name == "sasl-plain") return Mechanism::sasl_plain;
  if (name == "sasl-login") return Mechanism::sasl_login;
  return Mechanism::user;
}

std::string encode_lock_request() { return std::string(1, static_cast<char>(Tag::lock)); }

bool is_lock_request(std::string_view message) { return message == encode_lock_request(); }

std::string encode_lock_answer(Tag answer, std::string_view text) {
  std::string message(1, static_cast<char>(answer));
  message += text;
  return message;
}

std::optional<LockAnswer> decode_lock_answer(std::string_view message) {
  if (message.empty()) return std::nullopt;
  auto tag = static_cast<Tag>(message[0]);
  if (tag != Tag::lock_held && tag != Tag::lock_none && tag != Tag::lock_busy && tag != Tag::lock_failed)
    return std::nullopt;
  return LockAnswer{tag, std::string(message.substr(1))};
}

}  // namespace popd::server::handover
