// SIPREC recording metadata (RFC 7865) with pugixml. What is accepted, beyond the RFC, and why
// (every case below is in ../shared/testdata/siprec/):
// - the root is `recording` (RFC 7865; namespaces urn:ietf:params:xml:ns:recording:1, the
//   draft's urn:ietf:params:xml:ns:recording, or none) or `recording_metadata` (BroadWorks,
//   after draft-ietf-siprec-metadata, namespace urn:ietf:params:xml:ns:siprec). Elements and
//   attributes are matched by local name, case-insensitively; the namespace URI is not checked,
//   so a vendor's own URI is accepted too (nothing in a recording document needs it to decide).
// - ids: `session_id` / `participant_id` / `stream_id` / `group_id` attributes (RFC 7865:
//   Cisco, OpenSIPS, SEMS, Intrado, Avaya SBCE) or `id` (drafts: Acme/Oracle, BroadWorks).
// - a participant's address: nameID@aor (RFC) or an `aor` child element (BroadWorks); its
//   streams: send/recv children of the participant (Acme, BroadWorks, where the stream id may
//   sit in an `id` child) and participantstreamassoc elements (RFC 7865), folded together.
// - the recorded call's Call-ID, first found of: session/sipSessionID (RFC; Cisco puts a
//   Session-ID value there, OpenSIPS the Call-ID), a `callid` element in extension data (Acme
//   apkt:callid, BroadWorks broadWorksRecordingMetadata/callID, its call-half id), an Acme
//   apkt:header label="Call-ID" value, an Acme/Avaya apkt:ucid.
// - caller hints: Acme apkt:callingParty true/false and apkt:callerOrig true inside a
//   participant (callerOrig in the session's extension data is about the session and is not
//   used), Intrado <role>calling|called</role>, BroadWorks callingPartyNumber /
//   calledPartyNumber matched against the participants' aors.
// Refused: a DOCTYPE or ENTITY declaration anywhere (before parsing), NUL bytes, documents over
// kMaxMetadataBytes, more than kMaxParticipants participants or kMaxStreams streams (also per
// participant send/recv list). No exceptions are used; pugixml does not throw outside XPath.
#include "control/sip/rs_metadata.hpp"

#include <pugixml.hpp>

#include <algorithm>

#include "control/sip/sip_message.hpp"  // iequals, trim

namespace callrec::control::sip {
namespace {

constexpr unsigned kMaxDepth = 32;  // extension data deeper than this is not searched

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool icontains(std::string_view hay, std::string_view needle) {
  if (needle.size() > hay.size()) return false;
  for (std::size_t i = 0; i + needle.size() <= hay.size(); ++i)
    if (iequals(hay.substr(i, needle.size()), needle)) return true;
  return false;
}

std::string lowered(std::string_view s) {
  std::string r(s);
  for (char& c : r) c = lower(c);
  return r;
}

/// "apkt:callingParty" -> "callingParty".
std::string_view local_name(const char* qname) {
  const std::string_view q(qname);
  const std::size_t c = q.rfind(':');
  return c == std::string_view::npos ? q : q.substr(c + 1);
}

bool is(pugi::xml_node n, std::string_view local) {
  return n.type() == pugi::node_element && iequals(local_name(n.name()), local);
}

std::string text_of(pugi::xml_node n) { return std::string(trim(n.child_value())); }

pugi::xml_node child(pugi::xml_node n, std::string_view local) {
  for (pugi::xml_node c = n.first_child(); c; c = c.next_sibling())
    if (is(c, local)) return c;
  return {};
}

/// The value of the first attribute named `preferred`, else of one named `other` (local names).
std::string id_attr(pugi::xml_node n, std::string_view preferred, std::string_view other = "id") {
  for (std::string_view want : {preferred, other})
    for (pugi::xml_attribute a = n.first_attribute(); a; a = a.next_attribute())
      if (iequals(local_name(a.name()), want)) return std::string(trim(a.value()));
  return {};
}

/// Calls f(element, depth) for every element below `top` (not top itself) in document order,
/// without recursion; subtrees deeper than kMaxDepth are skipped.
template <class F>
void walk(pugi::xml_node top, F&& f) {
  pugi::xml_node n = top.first_child();
  unsigned depth = 1;
  while (n && n != top) {
    if (n.type() == pugi::node_element) f(n, depth);
    if (n.type() == pugi::node_element && n.first_child() && depth < kMaxDepth) {
      n = n.first_child();
      ++depth;
      continue;
    }
    while (n && n != top && !n.next_sibling()) {
      n = n.parent();
      --depth;
    }
    if (n && n != top) n = n.next_sibling();
  }
}

/// true/false hint values: +1, -1, 0 when neither.
int truth(std::string_view v) {
  v = trim(v);
  if (iequals(v, "true") || v == "1" || iequals(v, "yes")) return 1;
  if (iequals(v, "false") || v == "0" || iequals(v, "no")) return -1;
  return 0;
}

/// Appends `id` unless present; false when the list would exceed kMaxStreams.
bool add_unique(std::vector<std::string>& list, std::string id) {
  if (id.empty() || std::find(list.begin(), list.end(), id) != list.end()) return true;
  if (list.size() >= kMaxStreams) return false;
  list.push_back(std::move(id));
  return true;
}

/// The stream ids of a send/recv element: its text, or its `id` children (BroadWorks).
bool stream_refs(pugi::xml_node el, std::vector<std::string>& list) {
  std::string v = text_of(el);
  if (!v.empty()) return add_unique(list, std::move(v));
  for (pugi::xml_node c = el.first_child(); c; c = c.next_sibling())
    if (is(c, "id") && !add_unique(list, text_of(c))) return false;
  return true;
}

/// Folds the send/recv children of `el` (a participant or a participantstreamassoc) into p.
bool fold_streams(pugi::xml_node el, RsParticipant& p) {
  for (pugi::xml_node c = el.first_child(); c; c = c.next_sibling()) {
    if (is(c, "send")) {
      p.streams_given = true;
      if (!stream_refs(c, p.send)) return false;
    } else if (is(c, "recv")) {
      p.streams_given = true;
      if (!stream_refs(c, p.recv)) return false;
    }
  }
  return true;
}

/// The participant with this id, created at the end when absent (nullptr: over the bound).
/// An empty id never matches: each participant without an id is its own.
RsParticipant* participant_by_id(RsMetadata& m, const std::string& id) {
  if (!id.empty())
    for (RsParticipant& p : m.participants)
      if (p.id == id) return &p;
  if (m.participants.size() >= kMaxParticipants) return nullptr;
  m.participants.emplace_back();
  m.participants.back().id = id;
  return &m.participants.back();
}

int role_hint(std::string_view role) {
  role = trim(role);
  if (iequals(role, "calling") || iequals(role, "caller") || iequals(role, "originating")) return 1;
  if (iequals(role, "called") || iequals(role, "callee") || iequals(role, "terminating")) return -1;
  return 0;
}

MetadataError parse_participant(pugi::xml_node el, RsMetadata& m) {
  RsParticipant* p = participant_by_id(m, id_attr(el, "participant_id"));
  if (p == nullptr) return MetadataError::kTooMany;
  for (pugi::xml_node c = el.first_child(); c; c = c.next_sibling()) {
    if (is(c, "nameID")) {
      if (p->aor.empty()) p->aor = id_attr(c, "aor", "aor");
      for (pugi::xml_node n = c.first_child(); n && p->name.empty(); n = n.next_sibling())
        if (is(n, "name")) p->name = text_of(n);
    } else if (is(c, "aor")) {  // draft / BroadWorks
      if (p->aor.empty()) p->aor = text_of(c);
    } else if (is(c, "name")) {
      if (p->name.empty()) p->name = text_of(c);
    }
  }
  if (!fold_streams(el, *p)) return MetadataError::kTooMany;
  // Caller hints anywhere below the participant (vendor extension data); the first one counts.
  walk(el, [&](pugi::xml_node n, unsigned) {
    if (p->caller_hint != 0) return;
    if (is(n, "callingParty")) p->caller_hint = truth(n.child_value());
    else if (is(n, "callerOrig")) p->caller_hint = truth(n.child_value()) > 0 ? 1 : 0;
    else if (is(n, "role")) p->caller_hint = role_hint(n.child_value());
  });
  return MetadataError::kOk;
}

MetadataError parse_stream(pugi::xml_node el, RsMetadata& m) {
  std::string id = id_attr(el, "stream_id");
  RsStream* s = nullptr;
  if (!id.empty())
    for (RsStream& x : m.streams)
      if (x.id == id) s = &x;
  if (s == nullptr) {
    if (m.streams.size() >= kMaxStreams) return MetadataError::kTooMany;
    m.streams.emplace_back();
    s = &m.streams.back();
    s->id = std::move(id);
  }
  if (const pugi::xml_node l = child(el, "label"); l && s->label.empty()) s->label = text_of(l);
  return MetadataError::kOk;
}

/// "sip:+1 (555) 0100@host;user=phone" -> "15550100": the digits of the user part when it is a
/// telephone number, else the user part; "" when there is none.
std::string number_of(std::string_view aor) {
  aor = trim(aor);
  if (aor.starts_with('<')) aor.remove_prefix(1);
  const std::size_t colon = aor.find(':');
  if (colon != std::string_view::npos && colon < aor.find('@')) aor.remove_prefix(colon + 1);
  aor = aor.substr(0, aor.find_first_of("@;>"));
  std::string digits;
  for (char c : aor) {
    if (c >= '0' && c <= '9') digits.push_back(c);
    else if (c != '+' && c != '-' && c != '.' && c != '(' && c != ')' && c != ' ') return lowered(aor);
  }
  return digits;
}

/// Does this aor name that number (BroadWorks callingPartyNumber)? Exactly, or the same user,
/// or telephone numbers of at least 7 digits that agree on their last digits (country code
/// present on one side only: "+18638254725" and "8638254725").
bool same_party(std::string_view aor, std::string_view number) {
  if (trim(aor).empty() || trim(number).empty()) return false;
  if (iequals(trim(aor), trim(number))) return true;
  const std::string a = number_of(aor);
  const std::string b = number_of(number);
  if (a.empty() || b.empty()) return false;
  if (a == b) return true;
  const bool numeric = a.find_first_not_of("0123456789") == std::string::npos &&
                       b.find_first_not_of("0123456789") == std::string::npos;
  const std::string& shorter = a.size() < b.size() ? a : b;
  const std::string& longer = a.size() < b.size() ? b : a;
  return numeric && shorter.size() >= 7 && longer.ends_with(shorter);
}

}  // namespace

const char* metadata_error_name(MetadataError e) {
  switch (e) {
    case MetadataError::kOk: return "ok";
    case MetadataError::kTooLarge: return "too_large";
    case MetadataError::kDoctype: return "doctype";
    case MetadataError::kMalformed: return "malformed";
    case MetadataError::kNotRecording: return "not_recording";
    case MetadataError::kTooMany: return "too_many";
  }
  return "unknown";
}

MetadataError parse_rs_metadata(std::string_view xml, RsMetadata& out) {
  out = RsMetadata{};
  if (xml.size() > kMaxMetadataBytes) return MetadataError::kTooLarge;
  if (xml.find('\0') != std::string_view::npos) return MetadataError::kMalformed;
  // A DTD is never needed by rs-metadata, and refusing it before parsing keeps entity
  // declarations (billion laughs, external entities) away from any parser.
  if (icontains(xml, "<!DOCTYPE") || icontains(xml, "<!ENTITY")) return MetadataError::kDoctype;

  pugi::xml_document doc;
  // parse_default: CDATA, the five predefined entities and character references, EOL and
  // attribute whitespace normalization; pugixml has no DTD processing and never expands
  // a declared entity.
  const pugi::xml_parse_result r = doc.load_buffer(xml.data(), xml.size(), pugi::parse_default, pugi::encoding_utf8);
  if (!r) return MetadataError::kMalformed;
  const pugi::xml_node root = doc.document_element();
  if (!root) return MetadataError::kMalformed;
  if (!is(root, "recording") && !is(root, "recording_metadata")) return MetadataError::kNotRecording;

  RsMetadata m;
  std::vector<pugi::xml_node> assocs;
  for (pugi::xml_node c = root.first_child(); c; c = c.next_sibling()) {
    MetadataError e = MetadataError::kOk;
    if (is(c, "dataMode")) {
      if (m.data_mode.empty()) m.data_mode = lowered(trim(c.child_value()));
    } else if (is(c, "session")) {
      if (m.session_id.empty()) m.session_id = id_attr(c, "session_id");
    } else if (is(c, "group")) {
      if (m.group_id.empty()) m.group_id = id_attr(c, "group_id");
    } else if (is(c, "participant")) {
      e = parse_participant(c, m);
    } else if (is(c, "stream")) {
      e = parse_stream(c, m);
    } else if (is(c, "participantstreamassoc")) {
      assocs.push_back(c);  // after all participants: the RFC allows any order
    }
    if (e != MetadataError::kOk) return e;
  }
  for (pugi::xml_node a : assocs) {
    const std::string id = id_attr(a, "participant_id");
    if (id.empty()) continue;  // names nobody
    RsParticipant* p = participant_by_id(m, id);
    if (p == nullptr || !fold_streams(a, *p)) return MetadataError::kTooMany;
    p->streams_given = true;  // even an empty association says "sends nothing"
  }

  // Vendor data anywhere in the document: the recorded call's id, BroadWorks party numbers.
  int id_rank = 4;  // lower is better; see the file comment
  std::string calling_number;
  std::string called_number;
  walk(root, [&](pugi::xml_node n, unsigned) {
    int rank = 4;
    std::string v;
    if (is(n, "sipSessionID")) {
      rank = 0;
      v = text_of(n);
    } else if (is(n, "callid")) {
      rank = 1;
      v = text_of(n);
    } else if (is(n, "header") && iequals(trim(n.attribute("label").value()), "Call-ID")) {
      rank = 2;
      v = text_of(child(n, "value"));
      if (v.empty()) v = text_of(n);
    } else if (is(n, "ucid")) {
      rank = 3;
      v = text_of(n);
    } else if (is(n, "callingPartyNumber")) {
      if (calling_number.empty()) calling_number = text_of(n);
    } else if (is(n, "calledPartyNumber")) {
      if (called_number.empty()) called_number = text_of(n);
    }
    if (rank < id_rank && !v.empty()) {
      id_rank = rank;
      m.recorded_call_id = std::move(v);
    }
  });
  for (RsParticipant& p : m.participants) {
    if (p.caller_hint != 0) continue;
    if (same_party(p.aor, calling_number)) p.caller_hint = 1;
    else if (same_party(p.aor, called_number)) p.caller_hint = -1;
  }
  out = std::move(m);
  return MetadataError::kOk;
}

const RsParticipant* RsMetadata::sender_of_label(std::string_view label) const {
  label = trim(label);
  if (label.empty()) return nullptr;
  for (const RsStream& s : streams) {
    if (s.label != label || s.id.empty()) continue;
    for (const RsParticipant& p : participants)
      if (std::find(p.send.begin(), p.send.end(), s.id) != p.send.end()) return &p;
  }
  return nullptr;
}

const RsParticipant* RsMetadata::caller() const {
  if (participants.empty()) return nullptr;
  const RsParticipant* called = nullptr;
  unsigned n_called = 0;
  for (const RsParticipant& p : participants) {
    if (p.caller_hint > 0) return &p;
    if (p.caller_hint < 0) {
      called = &p;
      ++n_called;
    }
  }
  if (n_called == 1 && participants.size() == 2)
    return called == &participants[0] ? &participants[1] : &participants[0];
  for (const RsParticipant& p : participants)
    if (!p.send.empty()) return &p;
  return &participants.front();
}

void merge_rs_metadata(RsMetadata& base, const RsMetadata& update) {
  if (update.data_mode != "partial") {
    base = update;
    return;
  }
  if (base.data_mode.empty()) base.data_mode = update.data_mode;
  if (!update.session_id.empty()) base.session_id = update.session_id;
  if (!update.group_id.empty()) base.group_id = update.group_id;
  if (!update.recorded_call_id.empty()) base.recorded_call_id = update.recorded_call_id;

  for (const RsParticipant& u : update.participants) {
    RsParticipant* p = nullptr;
    for (RsParticipant& b : base.participants)
      if (u.id.empty() ? b == u : b.id == u.id) p = &b;
    if (p == nullptr) {
      if (base.participants.size() < kMaxParticipants) base.participants.push_back(u);
      continue;
    }
    if (!u.name.empty()) p->name = u.name;
    if (!u.aor.empty()) p->aor = u.aor;
    if (u.caller_hint != 0) p->caller_hint = u.caller_hint;
    if (u.streams_given) {
      p->send = u.send;
      p->recv = u.recv;
      p->streams_given = true;
    }
  }
  for (const RsStream& u : update.streams) {
    RsStream* s = nullptr;
    for (RsStream& b : base.streams)
      if (u.id.empty() ? b == u : b.id == u.id) s = &b;
    if (s == nullptr) {
      if (base.streams.size() < kMaxStreams) base.streams.push_back(u);
      continue;
    }
    if (!u.label.empty()) s->label = u.label;
  }
}

}  // namespace callrec::control::sip
