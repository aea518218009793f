// --max-per-ip: at most N concurrent connections from one client address,
// the real one (after a PROXY protocol header), where a spawner's
// per-source limits count a load balancer's address once. Processes
// share no memory in the inetd model, so each connection's monitor holds
// one of N lock files for its address (flock) for its whole life: a
// process that dies, even by kill -9, gives its slot back with its
// descriptors. The files stay (empty; removing one safely would need a
// lock of its own); systemd-tmpfiles ages out those unused for a day.
#pragma once

#include <optional>
#include <string>

#include "sys/fd.h"

namespace popd::server {

struct SlotTaken {
  sys::UniqueFd slot;  // held: the connection may go on
  bool full = false;   // else: all `limit` are held by other connections ...
  std::string error;   // ... or none could be taken (the caller lets it through)
};

// What is counted for a client address: an IPv4 address itself; for
// IPv6 its /64 ("2001:db8:1:2::-64"), since one host or home network gets
// a /64 and can take any address in it.
std::string counted_source(const std::string& address);

// A free slot of `limit` for the counted_source() of `address` in
// `directory` (made popd's own, 0700, if missing).
SlotTaken take_connection_slot(const std::string& directory, const std::string& address, int limit);

}  // namespace popd::server
