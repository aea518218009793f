// --max-per-ip: at most N concurrent connections from one client address,
// the real one (after a PROXY protocol header), where a spawner's
// per-source limits count a load balancer's address once. Processes
// share no memory in the inetd model, so each connection holds one of N
// lock files for its address (flock) for its whole life: a process that
// dies, even by kill -9, gives its slot back with its descriptors.
#pragma once

#include <optional>
#include <string>

#include "sys/fd.h"

namespace popd::server {

// One slot, held while this lives; its file is removed when it ends.
class ConnectionSlot {
 public:
  ConnectionSlot(sys::UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}
  ConnectionSlot(ConnectionSlot&&) = default;
  ConnectionSlot& operator=(ConnectionSlot&&) = default;
  ~ConnectionSlot();

 private:
  sys::UniqueFd fd_;
  std::string path_;
};

// A free slot of `limit` for `address` in `directory` (made root's, 0700,
// if missing); nullopt with `error` empty when all are taken, or with
// `error` when none could be taken (then the caller lets the connection
// through: the limit must not lock everyone out).
std::optional<ConnectionSlot> take_connection_slot(const std::string& directory, const std::string& address,
                                                   int limit, std::string& error);

}  // namespace popd::server
