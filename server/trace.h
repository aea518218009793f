// --trace-dir: transcripts of one user's sessions, for debugging a client
// (Dovecot's rawlog_dir), with every password and SASL response replaced
// by *** (protocol/trace.h).
//
// Who writes what: the pre-auth process may open no file (DESIGN), so it
// holds its part in memory and sends it to the monitor before each login
// request and before its end report (handover.h). The monitor, as root,
// puts it, each time whole, into a new root-owned file in the directory
// of the user the request names; a session that follows inherits that
// file and appends the rest. The files are mode 0600; the session's
// process may write to its own, never read one. Without root (one process
// for the invoking user) the file is that user's own, made at the first
// login attempt. What the pre-auth process sends is not checked: a
// compromised one could write anything there, up to the bound.
#pragma once

#include <cstdint>
#include <list>
#include <optional>
#include <string>
#include <string_view>

#include "options.h"
#include "protocol/trace.h"
#include "sys/fd.h"

namespace popd::server {

// A transcript: "C: " before each client line, "S: " before each reply
// line, the bytes as they went (line ends too).
class SessionTrace final : public protocol::Trace {
 public:
  // Held in memory (the pre-auth process): the latest
  // params::max_preauth_trace bytes, and a note of how much went before.
  SessionTrace() = default;
  // Appended to `fd` (not owned), up to params::max_trace_bytes in all
  // (from the file's start), then a note that it stops.
  explicit SessionTrace(int fd);
  ~SessionTrace();
  SessionTrace(const SessionTrace&) = delete;
  SessionTrace& operator=(const SessionTrace&) = delete;

  void client(std::string_view line) override;
  void server(std::string_view bytes) override;
  // What is held in memory, with its note.
  std::string held() const;
  // From now on into `fd`, what was held first.
  void attach(int fd);

 private:
  void add(std::string_view bytes);
  void flush();

  int fd_ = -1;
  std::string text_;
  std::uint64_t size_ = 0;      // in the file
  std::uint64_t left_out_ = 0;  // from memory
  bool at_line_start_ = true;
  bool full_ = false;
};

// Where --trace-dir puts the files of `user` (the name the client gave):
// the template expanded, or nullopt where %u, %n or %d would be empty.
std::optional<std::string> trace_directory(const std::string& dir_template, const std::string& user);

// A new trace file in `directory`, if it exists (made, 0700, if `make`)
// and is reached through directories that only root (or the invoking
// user, without root) can change; an unsafe one is refused and logged.
// It is root's (without root, the user's), mode 0600, named
// USER-YYYYMMDD-HHMMSS-PID.trace (-2 and so on if taken), and starts with
// a line naming the user, the client and the time.
struct TraceFile {
  sys::UniqueFd fd;          // none: not traced
  std::string path;
  std::uint64_t header = 0;  // the bytes of that first line
  std::string error;         // why an unsafe directory was refused
};
TraceFile create_trace_file(const std::string& directory, bool make, const std::string& user,
                            const std::string& peer);
// The same for a user of the options' --trace-dir.
TraceFile create_trace_file(const Options& options, const std::string& user, const std::string& peer);

// The monitor's: one file in each directory the users a connection names
// lead to, each holding the whole connection: every transcript the
// pre-auth process sends replaces the pre-auth part of them all.
class TraceFiles {
 public:
  TraceFiles(const Options& options, std::string peer) : options_(options), peer_(std::move(peer)) {}
  void record(const std::string& user, std::string_view transcript);
  // The file of the user last recorded, which the session appends to; -1 if none.
  int fd() const { return current_ ? current_->fd.get() : -1; }

 private:
  struct Named {
    std::string directory;
    TraceFile file;
  };
  const Options& options_;
  std::string peer_;
  std::list<Named> files_;  // stable addresses for current_
  TraceFile* current_ = nullptr;
};

}  // namespace popd::server
