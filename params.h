// Every tunable limit of popd, with the reason for its value.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

namespace popd::params {

// RFC 2449 section 4: a command line is at most 255 octets including CRLF.
inline constexpr std::size_t max_command_line = 255;

// RFC 5034 lifts the 255-octet limit for the client's SASL responses: a
// PLAIN response carries a user name and password in base64. 2 KiB holds
// any sane pair and still bounds what one line may make us buffer.
inline constexpr std::size_t max_sasl_line = 2048;

// RFC 1939 section 3: the idle timer must be at least 10 minutes.
inline constexpr int default_idle_timeout_seconds = 600;

// Failed logins before the connection is closed: enough for a typo or two,
// too few for guessing passwords through one connection.
inline constexpr int max_login_failures = 3;

// Delay before answering a failed login: slows guessing, and the same delay
// for unknown users and wrong passwords reveals nothing about which it was.
inline constexpr std::chrono::milliseconds failed_login_delay{2000};

// How long a login waits for the mailbox lock before -ERR [IN-USE]: long
// enough to ride out a delivery in progress, short enough that a client does
// not time out.
inline constexpr std::chrono::milliseconds lock_wait{4000};
// A dotlock older than 5 minutes is taken for stale by others (liblockfile,
// and on a shared spool nothing else tells): its holder touches it this
// often, as liblockfile's manual asks.
inline constexpr std::chrono::seconds lock_refresh{60};
// It tries again after 10 ms, then twice as long each time, up to 250 ms:
// a session that just ended releases its lock within milliseconds.
inline constexpr std::chrono::milliseconds lock_first_retry{10};
inline constexpr std::chrono::milliseconds lock_retry_interval{250};

// Block size for reading the mailbox and the client: large enough that a
// 1 GB spool is read with few system calls, small enough to stay in cache.
// RETR and TOP read messages no larger than this through one window of
// this size, mapped (mailbox/file_window.h), which serves the messages that
// follow too.
inline constexpr std::size_t read_block = 1 << 20;

// A commit moves the kept mail down in steps, each made durable with up to
// three fsyncs (the bytes it overwrites before it reads them, in the
// journal; a progress record; the mailbox). A step is at least the bytes
// deleted before it, so that it needs no copy in the journal, or a
// sixteenth of what is moved if that is more, but at least 1 MiB (a small
// deletion early in a large mailbox does not cost a thousand fsyncs) and
// at most 16 MiB: the journal holds two steps' copies, so this bounds the
// disk space and the new page cache a commit needs besides the mailbox,
// however large the mailbox. Smaller steps cost more fsyncs (three a
// step); larger ones more fresh page cache at once, which is slow on a VM;
// 8 to 16 MiB was the best of both on DELE 1 of a large mailbox.
inline constexpr std::uint64_t commit_steps = 16;
inline constexpr std::uint64_t commit_step_floor = 1 << 20;
inline constexpr std::uint64_t commit_step_ceiling = 16 << 20;
// Where the bytes deleted before a step are at least this many, the step
// is that long and needs no copy, however small the floor above would make
// it: on the disks we know, two fsyncs cost less than copying 4 MiB (an
// SSD without power-loss protection: 1-3 ms a sync, 500 MB/s; a spinning
// disk: 10 ms, 150 MB/s), so deleting a large attachment writes the
// mailbox's bytes once.
inline constexpr std::uint64_t commit_gap_without_copy = 4 << 20;

// A Maildir's new/ and cur/ are listed again while renames move their
// change times during a listing, up to this many times; then what the last
// listing saw is served (a message it missed is there at the next login).
inline constexpr int maildir_scans = 4;
// A message QUIT deletes that a reader renamed meanwhile is looked for in
// this many listings: a name two listings in a row do not show is gone;
// one renamed again before each unlink this many times is left for the
// next session (a reader does not rename a message that often).
inline constexpr int maildir_chases = 8;
// At most this much of the names of symbolic links and other non-files
// found in a Maildir goes to syslog.
inline constexpr std::size_t maildir_skipped_note = 512;
// The lists a Maildir session reads whole (Dovecot's dovecot-uidlist,
// Courier's courierpop3dsizelist, popd's sizes file and journal of
// deletions): 64 MiB holds the lines of a million messages, and bounds
// what a corrupt file can make a session allocate.
inline constexpr std::uint64_t maildir_list_limit = 64 << 20;

// A mailbox this large is parsed by two threads, one from the middle: on
// a smaller one a thread costs more than it saves.
inline constexpr std::uint64_t parallel_parse = 32 << 20;

// The index (mailbox/mbox/index.h) is checked against the spool by reading each
// message's From_ line, up to this many bytes of it: all of any real one.
inline constexpr std::size_t index_from_bytes = 256;

// The index check reads the From_ line of each message through a window
// of the spool this large, mapped (mailbox/file_window.h), that moves along:
// the spool is not copied, and only the pages near the lines are mapped.
// The pages count in the session's RSS until the window moves on, so it is
// small. Reading the lines with preads copies far more than they hold;
// one mapping of the whole spool is barely faster, but holds it all in
// the session's RSS.
inline constexpr std::uint64_t index_check_window = 1 << 20;

// The index is read and written in blocks of this size: few calls, and under
// mmap_threshold, so that the block is not a fresh mapping of which every
// page faults (a 1 MiB block: 256 faults a login).
inline constexpr std::size_t index_block = 64 * 1024;

// TOP reads a message in blocks this size: a header rarely needs more, and
// reading whole messages (up to read_block) for a few lines would cost a
// TOP of every message as much as a RETR of every message.
inline constexpr std::size_t top_block = 16 * 1024;

// Output is buffered up to this size before it is written: a write costs
// per call as much as per byte, and with 1 MiB rather than 64 KiB a RETR of
// every message of a large mailbox takes a third less system time. Replies
// are flushed whenever no more commands wait, so no reply waits for it.
inline constexpr std::size_t output_buffer = 1024 * 1024;

// A write this large (a piece of a RETR body) goes to the socket as it is
// rather than through the output buffer: copying it there would cost more
// than the call it saves.
inline constexpr std::size_t direct_write = 64 * 1024;

// RETR converts a message's lines (CRLF, dot-stuffing) in pieces of about
// this size: big enough for few writes, small enough that the scratch
// space (up to twice a piece) does not weigh on a session's memory.
inline constexpr std::size_t stuffing_piece = 256 * 1024;

// Allocations from this size on are mmapped, so freeing them returns the
// memory (popd.c++): a session's peak is what it holds at once.
inline constexpr int mmap_threshold = 256 * 1024;

// The message list's memory (mailbox/message_memory.h) is mapped in chunks
// populated at once, from this size, each twice the last, up to the
// largest: a small mailbox takes little, 100,000 messages (7 MB) take 31
// calls, and at most a chunk lies unused (with 1 MiB chunks a session's
// peak grew by 0.8 MiB, to 15.9).
inline constexpr std::size_t message_chunk_first = 64 * 1024;
inline constexpr std::size_t message_chunk_max = 256 * 1024;

// Input read from the client per read(2).
inline constexpr std::size_t input_block = 16 * 1024;

// The TLS relay holds at most this much in each direction: enough to keep
// loopback and long fat networks busy, bounded so that a side that stops
// reading cannot make the relay grow. A full buffer stops reading from the
// side that fills it; the other direction goes on. The TLS records for the
// client collect in a buffer of this size too, written to the socket when
// it fills or when nothing more waits: with a write per 16 KiB record, a
// RETR of a large mailbox took a quarter longer.
inline constexpr std::size_t relay_buffer = 256 * 1024;

// A plain session that sends message bodies writes them to the socket from
// a second thread (io/sender.h) in two buffers of this size: the thread
// sends one while the session fills the other. Handed over only when full
// (or at a flush): with hand-overs from 64 KiB on, the smaller writes and
// the wake-ups made a RETR of the 1.5 GB mailbox cost a third more CPU.
inline constexpr std::size_t sender_buffer = 512 * 1024;

// With TLS, replies go from the session to the relay through a ring of
// shared memory of this size (io/ring.h): as much as the output buffer
// holds, so that a flush of pipelined replies rarely waits for room.
inline constexpr std::size_t ring_size = output_buffer;
// The session hands what it has written to the relay once this much has
// collected, not only when no command waits: the relay encrypts while the
// session reads on, and its TLS records are full ones (16 KiB).
inline constexpr std::size_t ring_publish = 64 * 1024;

// At the end of a session popd half-closes the connection and reads, for at
// most this long, what the client still sends: closing a socket with unread
// input resets the connection, and the client could lose the last reply.
// Clients close at once after the QUIT reply, so this is rarely waited out.
inline constexpr std::chrono::milliseconds linger{2000};

// After the session's total time limit (--max-session), the relay waits at
// most this long for the session's last reply before it gives up.
inline constexpr std::chrono::seconds relay_grace{5};

// Input the pre-authentication process read but did not answer (commands
// pipelined after PASS) is handed to the session; at most one read and one
// unfinished line, so this bound is never reached by a real client.
inline constexpr std::size_t max_handover = input_block + max_sasl_line + 1024;

// The pre-auth process hands the connection to the session as soon as the
// monitor says the login succeeded: one local message. The session waits
// this long for it, and locks the mailbox only once it has it, so that a
// pre-auth process that stalls (a bug, or an attacker in it) cannot keep a
// user's mailbox locked.
inline constexpr std::chrono::seconds handover_wait{5};
// One process waiting for another's bounded wait (the monitor for the
// session's hand-over, the session for the monitor's lock wait) waits this
// much longer: a message between local processes on a loaded host.
inline constexpr std::chrono::seconds local_margin{2};

// Before login a connection may last --login-timeout (default 60 s, as
// Dovecot's and Postfix's login limits): an unauthenticated client that
// sends a byte before every idle timeout would otherwise keep a root
// monitor and a pre-auth process, and a spawner's instance, for the whole
// --max-session. The pre-auth process ends such a connection itself; the
// monitor gives it this much longer to report, then kills it.
inline constexpr std::chrono::seconds prelogin_grace{5};

// The pre-auth process (server/sandbox.h) holds at most a handful of
// descriptors (the connection, the monitor's channel, syslog, the session's
// socket, the ring and the doorbell) and a few MiB (OpenSSL, the relay's
// buffers, the ring: 16 MiB of address space in all): these bound what a
// bug or an attacker in it could open or allocate.
inline constexpr unsigned long pre_auth_descriptors = 16;
inline constexpr unsigned long pre_auth_memory = 256ul << 20;

// A load balancer sends its PROXY protocol header at once; a connection
// that has not sent it by then is not from one.
inline constexpr std::chrono::milliseconds proxy_header_wait{5000};

// RFC 1939: a unique-id is 1 to 70 characters in 0x21..0x7E.
inline constexpr std::size_t max_uid_length = 70;

// Never pass a user name longer than this to PAM or syslog; real names are
// far shorter and a long one is an attack or a mistake.
inline constexpr std::size_t max_user_name = 128;
// popd --hash-password takes no longer password than a login can send:
// AUTH PLAIN's line of max_sasl_line octets of base64 carries 1,536.
inline constexpr std::size_t max_password = max_sasl_line / 4 * 3;

// A connection --max-per-ip refuses: how long the monitor waits, after
// its -ERR and its end, for the peer to close first, so that a proxy in
// front gets the reply rather than a reset. The slot is not held meanwhile.
inline constexpr std::chrono::milliseconds refusal_linger{1000};

// Anonymous mappings at least this large are placed on a 2 MiB boundary
// and advised for transparent huge pages (sys/huge_pages.h). In popd only
// the memory-hard password hash maps that much: yescrypt, Debian 12's
// default, maps 16 MiB per hash and writes all of it, twice a login; in
// 4 KiB pages that is thousands of page faults, much of a small session's
// time on a VM (where a fault costs microseconds), in 2 MiB pages a few. Smaller mappings
// are left alone: a huge page is only worth it when it is filled.
inline constexpr std::size_t huge_mapping_min = 8 << 20;
inline constexpr std::size_t huge_page = 2 << 20;

// Argon2 as popd --hash-password makes it: as Dovecot 2.3's doveadm pw
// makes ARGON2ID (3 passes over 64 MiB).
inline constexpr std::uint32_t argon2_passes = 3;
inline constexpr std::uint32_t argon2_kib = 64 * 1024;
// A passwd-file hash that asks for more than these is refused: the
// monitor, as root, pays it at every login of that user, so a hash of
// absurd cost would hold up logins. Each bound is a few seconds of one
// core here (yescrypt over 1 GiB: 3.9 s, twice that: 5 s; bcrypt cost 16:
// 3.4 s; SHA-512 crypt, 10 million rounds: 2.2 s), far above what anyone
// writes: the defaults are 16-64 MiB, bcrypt cost 5-12 and 5,000-656,000
// rounds. Memory-hard hashes (Argon2, yescrypt, scrypt): their memory;
// their work, memory times the passes made one after the other; passes
// alone, since a pass over little memory still costs (Argon2 starts its
// threads four times a pass); and lanes, each a thread of the monitor.
inline constexpr std::uint64_t max_hash_memory = std::uint64_t{1} << 30;
inline constexpr std::uint64_t max_hash_work = std::uint64_t{2} << 30;
inline constexpr std::uint64_t max_hash_passes = 16;
inline constexpr std::uint64_t max_hash_lanes = 16;
inline constexpr std::uint64_t max_bcrypt_cost = 16;
inline constexpr std::uint64_t max_sha_crypt_rounds = 10'000'000;
// The records a session keeps beside the index (INDEX.retrieved,
// INDEX.uidls) are read whole; one larger than this is not read, as if
// damaged (mail stays longer, the log says "-"). 100,000 messages take
// about 6 MB of the larger.
inline constexpr std::uint64_t max_state_file = 64 << 20;

// A passwd-file larger than this is refused: it is read whole for every
// login, and 64 MiB holds about half a million entries.
inline constexpr std::uint64_t max_passwd_file = 64 << 20;

// --trace-dir (server/trace.h). The pre-auth process holds its part of a
// transcript in memory and sends it whole to the monitor before each
// login request: the greeting, CAPA, STLS and a few attempts fit many
// times over, and a client that talks on without logging in is not worth
// more memory. A trace file stops growing at the second bound, noted in
// it: retrieving a 1 GB mailbox must not fill the disk with its copy.
inline constexpr std::size_t max_preauth_trace = 64 << 10;
inline constexpr std::uint64_t max_trace_bytes = 64 << 20;

}  // namespace popd::params
