#include "mailbox/expiry.h"

#include <charconv>

#include "params.h"
#include "sys/file.h"

namespace popd::mailbox {
namespace {

constexpr std::string_view header = "popd retrieved 1\n";

// The records file as it is, if it is the user's own; empty if none.
std::string read_records(const std::string& path, uid_t owner, std::string& note, Clock::time_point& written) {
  sys::OwnText read = sys::read_own_file(path, owner, params::max_state_file);
  note = read.note;
  if (read.st.st_mtim.tv_sec > 0)
    written = Clock::time_point(std::chrono::duration_cast<Clock::duration>(std::chrono::seconds(read.st.st_mtim.tv_sec)));
  return read.text;
}

}  // namespace

std::map<std::string, Clock::time_point> parse_retrieved(std::string_view text, Clock::time_point now) {
  std::map<std::string, Clock::time_point> records;
  std::int64_t now_seconds = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
  if (!text.starts_with(header)) return records;
  text.remove_prefix(header.size());
  while (!text.empty()) {
    std::size_t end = text.find('\n');
    if (end == std::string_view::npos) break;  // a line without its end: cut short
    std::string_view line = text.substr(0, end);
    text.remove_prefix(end + 1);
    std::int64_t seconds = 0;
    auto [after, error] = std::from_chars(line.data(), line.data() + line.size(), seconds);
    std::string_view uid = line.substr(static_cast<std::size_t>(after - line.data()));
    // Compared in seconds: a huge number must not wrap around to 1970.
    if (error != std::errc() || seconds < 0 || seconds > now_seconds || !uid.starts_with(' ')) continue;
    uid.remove_prefix(1);
    if (uid.empty()) continue;
    records.emplace(uid, Clock::time_point(std::chrono::seconds(seconds)));
  }
  return records;
}

std::string format_retrieved(const std::map<std::string, Clock::time_point>& records) {
  std::string text(header);
  for (const auto& [uid, when] : records) {
    text += std::to_string(std::chrono::duration_cast<std::chrono::seconds>(when.time_since_epoch()).count());
    text += ' ';
    text += uid;
    text += '\n';
  }
  return text;
}

ExpiringStore::ExpiringStore(std::unique_ptr<Store> inner, std::string records_path, uid_t owner,
                             std::chrono::days after)
    : inner_(std::move(inner)), path_(std::move(records_path)), owner_(owner), after_(after),
      retrieved_(inner_->count(), false) {}

bool ExpiringStore::send(std::size_t index, std::optional<std::uint64_t> body_lines, protocol::MessageSink& sink) {
  bool sent = inner_->send(index, body_lines, sink);
  if (sent && !body_lines) retrieved_[index] = true;
  return sent;
}

bool ExpiringStore::commit(const std::vector<bool>& deleted, std::string& error) {
  auto now = Clock::now();
  Clock::time_point written{};
  std::string before = read_records(path_, owner_, note_, written);
  // The clock is behind the last write: the times it would record now, or
  // compare, are not to be trusted; this commit neither expires nor records.
  if (now < written) {
    note_ = path_ + ": written in the future (the clock was set back): nothing expired or recorded";
    expired_ = 0;
    bool committed = inner_->commit(deleted, error);
    retrieved_.assign(count(), false);
    return committed;
  }
  auto old = parse_retrieved(before, now);
  std::map<std::string, Clock::time_point> records;  // of the messages there now
  std::vector<std::string> going;                    // ... that this commit deletes
  std::vector<bool> marked = deleted;
  std::size_t expired = 0;
  for (std::size_t i = 0; i < count(); ++i) {
    std::string id = uid(i);
    auto found = old.find(id);
    if (found == old.end() && !retrieved_[i]) continue;
    Clock::time_point first = found != old.end() ? found->second : now;
    if (!marked[i] && now - first >= after_) {
      marked[i] = true;
      ++expired;
    }
    if (marked[i]) going.push_back(id);
    records.emplace(std::move(id), first);
  }
  bool committed = inner_->commit(marked, error);
  // After a failed commit every record stays: nothing was deleted, or the
  // next session completes the deletions and finds their ids gone.
  expired_ = committed ? expired : 0;
  if (committed)
    for (const std::string& id : going) records.erase(id);
  std::string after = format_retrieved(records);
  std::string write_error;
  if (after != before && !(records.empty() && before.empty()) && !sys::replace_file(path_, after, true, write_error))
    note_ = write_error;
  retrieved_.assign(count(), false);  // numbered anew
  return committed;
}

}  // namespace popd::mailbox
