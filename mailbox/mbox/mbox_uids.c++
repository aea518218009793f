// The unique-ids of an mbox's messages (mbox.h): as each scheme writes
// them, and the numbering of duplicates. Beside mbox.c++, not in uids.c++,
// which knows the schemes but not the Mbox (mbox.h includes uids.h).
#include <algorithm>
#include <charconv>
#include <cstring>
#include <iterator>
#include <vector>

#include <xxhash.h>

#include "mailbox/mbox/mbox.h"

namespace popd::mailbox {
namespace {

std::string_view x_uidl_of(const Mbox& box, const Message& message) {
  return std::string_view(box.x_uidls).substr(message.old_key >> 8, message.old_key & 0xff);
}

// Numbers, in file order, the messages `less` says have the same id. By
// sorting a 32-bit key of each id with its index (8 bytes a message, not
// a hash map's ten times that); a run of one key is sorted again by the
// whole id, since keys of different ids may be alike. Sorting the indices
// by whole ids would reach into two messages of the deque at every
// comparison.
template <typename Key, typename Less>
void number_in_order(Messages& messages, std::vector<std::uint32_t> order, Key key, Less less) {
  struct Keyed {
    std::uint32_t key, index;
    bool operator<(const Keyed& other) const { return key != other.key ? key < other.key : index < other.index; }
  };
  std::vector<Keyed> keyed;
  keyed.reserve(order.size());
  for (std::uint32_t i : order) keyed.push_back({static_cast<std::uint32_t>(key(i)), i});
  order = {};
  std::sort(keyed.begin(), keyed.end());
  for (auto run = keyed.begin(); run != keyed.end();) {
    auto run_end = std::find_if(run, keyed.end(), [&](const Keyed& k) { return k.key != run->key; });
    // Alone with its key (nearly every message): its number is the 0 it has.
    if (run_end - run > 1) {
      std::stable_sort(run, run_end, [&](const Keyed& a, const Keyed& b) { return less(a.index, b.index); });
      for (auto i = run + 1; i != run_end; ++i)
        if (!less((i - 1)->index, i->index)) messages[i->index].duplicate = messages[(i - 1)->index].duplicate + 1;
    }
    run = run_end;
  }
}

// Identical messages get the same id: popd's own (the digest), or the one
// the scheme gives; each kind is numbered apart. A later copy's X-UIDL
// with its "-N" may be another message's X-UIDL (or too long): that copy
// gets popd's own id instead, so that all ids stay distinct.
void number_duplicates(Mbox& box) {
  auto& messages = box.messages;
  bool validity = box.validity || !needs_validity(box.scheme);
  std::vector<std::uint32_t> own, old;
  for (std::uint32_t i = 0; i < messages.size(); ++i) {
    messages[i].old_used = box.scheme != UidScheme::popd && messages[i].old_found && validity;
    messages[i].duplicate = 0;
    (messages[i].old_used ? old : own).push_back(i);
  }
  if (box.scheme == UidScheme::x_uidl) {
    auto value = [&](std::uint32_t i) { return x_uidl_of(box, messages[i]); };
    number_in_order(
        messages, old, [&](std::uint32_t i) { return XXH3_64bits(value(i).data(), value(i).size()); },
        [&](std::uint32_t a, std::uint32_t b) { return value(a) < value(b); });
    std::vector<std::string_view> values;
    for (std::uint32_t i : old) values.push_back(value(i));
    std::sort(values.begin(), values.end());
    for (std::uint32_t i : old) {
      if (messages[i].duplicate == 0) continue;
      std::string id = std::string(value(i)) + "-" + std::to_string(messages[i].duplicate + 1);
      if (id.size() > params::max_uid_length || std::binary_search(values.begin(), values.end(), id)) {
        messages[i].old_used = false;
        messages[i].duplicate = 0;  // numbered again with popd's own ids
        own.push_back(i);
      }
    }
    std::sort(own.begin(), own.end());
  } else {
    auto old_key = [&](std::uint32_t i) { return messages[i].old_key ^ messages[i].old_key >> 32; };
    number_in_order(messages, std::move(old), old_key,
                    [&](std::uint32_t a, std::uint32_t b) { return messages[a].old_key < messages[b].old_key; });
  }
  auto digest_key = [&](std::uint32_t i) {
    std::uint32_t key;
    std::memcpy(&key, messages[i].digest.data(), sizeof key);
    return key;
  };
  auto number_own = [&] {
    for (std::uint32_t i : own) messages[i].duplicate = 0;
    number_in_order(messages, own, digest_key,
                    [&](std::uint32_t a, std::uint32_t b) { return messages[a].digest < messages[b].digest; });
  };
  number_own();
  // An X-UIDL may also be what popd's own id of another message is (the
  // header is the sender's to write): that X-UIDL's message takes popd's
  // own id too, until no id is left twice. Each round moves one at least.
  while (box.scheme == UidScheme::x_uidl) {
    std::vector<std::pair<std::string, std::uint32_t>> x_uidl_ids;
    for (std::uint32_t i = 0; i < messages.size(); ++i)
      if (messages[i].old_used) x_uidl_ids.emplace_back(box.uid(i), i);
    if (x_uidl_ids.empty()) break;
    std::sort(x_uidl_ids.begin(), x_uidl_ids.end());
    bool moved = false;
    for (std::uint32_t i : std::vector<std::uint32_t>(own)) {
      auto found = std::lower_bound(x_uidl_ids.begin(), x_uidl_ids.end(), std::pair(messages[i].uid(), 0u));
      if (found == x_uidl_ids.end() || found->first != messages[i].uid()) continue;
      if (!messages[found->second].old_used) continue;
      messages[found->second].old_used = false;
      own.push_back(found->second);
      moved = true;
    }
    if (!moved) break;
    std::sort(own.begin(), own.end());
    number_own();
  }
}

void append_duplicate(std::uint32_t duplicate, std::string& out) {
  if (duplicate == 0) return;
  char number[16] = "-";
  out.append(number, std::to_chars(number + 1, std::end(number), duplicate + 1).ptr);
}

}  // namespace

void Message::append_uid(std::string& out) const {
  static constexpr char hex[] = "0123456789abcdef";
  char id[2 * sizeof digest];
  for (std::size_t i = 0; i < sizeof digest; ++i) {
    id[2 * i] = hex[digest[i] >> 4];
    id[2 * i + 1] = hex[digest[i] & 15];
  }
  out.append(id, sizeof id);
  append_duplicate(duplicate, out);
}

std::string Message::uid() const {
  std::string id;
  append_uid(id);
  return id;
}

std::uint64_t Mbox::record_end(std::size_t index) const {
  return index + 1 < messages.size() ? messages[index + 1].record_offset : end;
}

void Mbox::append_uid(std::size_t index, std::string& out) const {
  const Message& message = messages[index];
  if (!has_old_id(index)) return message.append_uid(out);
  if (scheme == UidScheme::x_uidl)
    out += x_uidl_of(*this, message);
  else
    out += format_old_id(scheme, message.old_key, validity.value_or(0));
  append_duplicate(message.duplicate, out);
}

std::string Mbox::uid(std::size_t index) const {
  std::string id;
  append_uid(index, id);
  return id;
}

bool Mbox::has_old_id(std::size_t index) const { return messages[index].old_used; }

void Mbox::renumber() { number_duplicates(*this); }

}  // namespace popd::mailbox
