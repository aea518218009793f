#include "mailbox/uidl_change.h"

#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include "params.h"
#include "sys/file.h"

namespace popd::mailbox {
namespace {

constexpr std::string_view header = "popd uidls 1\n";

}  // namespace

std::string format_uidl_hashes(const std::vector<std::uint64_t>& sorted) {
  std::string text(header);
  text.append(reinterpret_cast<const char*>(sorted.data()), sorted.size() * sizeof(std::uint64_t));
  return text;
}

std::optional<std::vector<std::uint64_t>> parse_uidl_hashes(std::string_view text) {
  if (!text.starts_with(header) || (text.size() - header.size()) % sizeof(std::uint64_t)) return std::nullopt;
  text.remove_prefix(header.size());
  std::vector<std::uint64_t> hashes(text.size() / sizeof(std::uint64_t));
  std::memcpy(hashes.data(), text.data(), text.size());
  if (!std::is_sorted(hashes.begin(), hashes.end())) return std::nullopt;
  return hashes;
}

UidlChange record_uidl_change(const protocol::Maildrop& drop, const std::string& path, uid_t owner) {
  UidlChange change;
  std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> listing(XXH3_createState(), XXH3_freeState);
  XXH3_64bits_reset(listing.get());
  std::vector<std::uint64_t> hashes;
  hashes.reserve(drop.count());
  std::string id;
  for (std::size_t i = 0; i < drop.count(); ++i) {
    id.clear();
    drop.append_uid(i, id);
    hashes.push_back(XXH3_64bits(id.data(), id.size()));
    id += '\n';
    XXH3_64bits_update(listing.get(), id.data(), id.size());
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(XXH3_64bits_digest(listing.get())));
  change.hash.assign(hex, 8);
  std::sort(hashes.begin(), hashes.end());

  sys::OwnText read = sys::read_own_file(path, owner, params::max_state_file);
  std::string& before = read.text;
  change.note = read.note;
  if (auto old = parse_uidl_hashes(before)) {
    change.added = static_cast<std::size_t>(std::count_if(
        hashes.begin(), hashes.end(), [&](std::uint64_t h) { return !std::binary_search(old->begin(), old->end(), h); }));
  }
  std::string after = format_uidl_hashes(hashes);
  // Another's file, or a link, is not replaced; a damaged or unreadable one is.
  if (after == before || read.refused) return change;
  // Not synced: a record lost to a crash only makes the next log line say "-".
  std::string error;
  if (!sys::replace_file(path, after, false, error)) change.note = error;
  return change;
}

}  // namespace popd::mailbox
