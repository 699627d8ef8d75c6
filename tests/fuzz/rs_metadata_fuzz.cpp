// libFuzzer target for the SIPREC rs-metadata parser (RFC 7865) and the update merge. The input
// is one document, or two separated by a line "--" (a recording's metadata, then an update).
// Checked on everything:
// - parsing never crashes; on an error the output is empty;
// - on success the bounds hold (kMaxParticipants, kMaxStreams, kMaxStreams per send/recv list),
//   strings are trimmed, data_mode is lower case, non-empty ids are unique;
// - caller() is null exactly when there is no participant and otherwise points into the list;
//   sender_of_label() of every stream's label is null or a participant of the list;
// - merging a document into itself changes nothing, and merging an update twice equals merging
//   it once (bounds still hold).
// Any violated property aborts (a finding), as does any sanitizer report.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>

#include "control/sip/rs_metadata.hpp"

namespace {

using namespace callrec::control::sip;

void check(bool ok) {
  if (!ok) std::abort();
}

bool trimmed(const std::string& s) {
  if (s.empty()) return true;
  auto ws = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  return !ws(s.front()) && !ws(s.back());
}

bool in_list(const RsMetadata& m, const RsParticipant* p) {
  return p == nullptr || (p >= m.participants.data() && p < m.participants.data() + m.participants.size());
}

void check_bounds(const RsMetadata& m) {
  check(m.participants.size() <= kMaxParticipants);
  check(m.streams.size() <= kMaxStreams);
  for (const RsParticipant& p : m.participants) {
    check(p.send.size() <= kMaxStreams && p.recv.size() <= kMaxStreams);
    check(p.caller_hint >= -1 && p.caller_hint <= 1);
  }
  check((m.caller() == nullptr) == m.participants.empty());
  check(in_list(m, m.caller()));
  for (const RsStream& s : m.streams) check(in_list(m, m.sender_of_label(s.label)));
}

void check_parsed(const RsMetadata& m) {
  check_bounds(m);
  for (char c : m.data_mode) check(c < 'A' || c > 'Z');
  check(trimmed(m.data_mode) && trimmed(m.session_id) && trimmed(m.group_id) && trimmed(m.recorded_call_id));
  std::set<std::string> ids;
  for (const RsParticipant& p : m.participants) {
    check(trimmed(p.id) && trimmed(p.name) && trimmed(p.aor));
    for (const std::string& s : p.send) check(!s.empty() && trimmed(s));
    for (const std::string& s : p.recv) check(!s.empty() && trimmed(s));
    if (!p.id.empty()) check(ids.insert(p.id).second);
  }
  ids.clear();
  for (const RsStream& s : m.streams) {
    check(trimmed(s.id) && trimmed(s.label));
    if (!s.id.empty()) check(ids.insert(s.id).second);
  }
}

bool parse(std::string_view doc, RsMetadata& m) {
  m.session_id = "stale";
  const MetadataError e = parse_rs_metadata(doc, m);
  check(metadata_error_name(e) != nullptr);
  if (e != MetadataError::kOk) {
    check(m == RsMetadata{});
    return false;
  }
  check(doc.size() <= kMaxMetadataBytes);
  check_parsed(m);
  RsMetadata self = m;
  merge_rs_metadata(self, m);
  check(self == m);
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view d(reinterpret_cast<const char*>(data), size);
  RsMetadata a;
  const bool a_ok = parse(d, a);

  const std::size_t sep = d.find("\n--\n");
  if (sep == std::string_view::npos) return 0;
  RsMetadata first;
  RsMetadata update;
  const bool first_ok = parse(d.substr(0, sep), first);
  const bool update_ok = parse(d.substr(sep + 4), update);
  (void)a_ok;
  if (!first_ok || !update_ok) return 0;
  merge_rs_metadata(first, update);
  check_bounds(first);
  RsMetadata twice = first;
  merge_rs_metadata(twice, update);
  check(twice == first);
  return 0;
}
