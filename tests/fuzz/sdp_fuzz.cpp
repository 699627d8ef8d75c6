// libFuzzer target for the SDP parser and the multipart splitter. The first line of the input is
// a Content-Type, the rest the body. Checked on everything that parses:
// - every view lies inside the body; the bounds (kMaxMedia, kMaxFormats, 16 parts, 16 crypto
//   lines) hold;
// - find_sdp() returns a view of the body, and split_multipart() says true exactly when it
//   found parts;
// - the SdpMedia helpers stay in range (first_pt() in -1..127, first_audio() has a port).
// Any violated property aborts (a finding), as does any sanitizer report.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "control/sip/sdp.hpp"
#include "control/sip/sip_message.hpp"

namespace {

using namespace callrec::control::sip;

void check(bool ok) {
  if (!ok) std::abort();
}

bool within(std::string_view inner, std::string_view outer) {
  if (inner.empty()) return true;
  return inner.data() >= outer.data() && inner.data() + inner.size() <= outer.data() + outer.size();
}

void check_sdp(std::string_view body) {
  Sdp s;
  if (!parse_sdp(body, s)) {
    check(s.media.empty());
    return;
  }
  check(s.media.size() <= kMaxMedia);
  check(s.dropped_media == 0 || s.media.size() == kMaxMedia);
  for (const SdpMedia& m : s.media) {
    check(within(m.media, body) && within(m.proto, body) && within(m.formats, body) && within(m.label, body));
    check(m.rtpmaps.size() <= kMaxFormats);
    check(m.crypto.size() <= 16);
    for (const RtpMap& r : m.rtpmaps) {
      check(within(r.encoding, body));
      check(r.pt <= 127);
      RtpMap found;
      check(m.lookup(r.pt, found));
    }
    for (std::string_view c : m.crypto) check(within(c, body));
    const int pt = m.first_pt();
    check(pt >= -1 && pt <= 127);
    if (m.receives()) check(m.port != 0 && m.addr.family != 0 && !m.addr.is_unspecified());
    check(m.addr.family == 0 || m.addr.family == 4 || m.addr.family == 6);
    (void)direction_name(m.dir);
  }
  const SdpMedia* a = s.first_audio();
  if (a != nullptr) check(a->port != 0 && a->media == "audio");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view d(reinterpret_cast<const char*>(data), size);
  const std::size_t nl = d.find('\n');
  const std::string_view content_type = d.substr(0, nl);
  const std::string_view body = nl == std::string_view::npos ? std::string_view{} : d.substr(nl + 1);

  check_sdp(d);
  check_sdp(body);

  std::vector<BodyPart> parts;
  const bool multi = split_multipart(content_type, body, parts);
  check(multi == !parts.empty());
  check(parts.size() <= 16);
  for (const BodyPart& p : parts) {
    check(within(p.body, body));
    check(within(p.content_type, body));
    check(within(p.content_disposition, body));
    check_sdp(p.body);
  }

  const std::string_view sdp = find_sdp(content_type, body);
  check(within(sdp, body));
  if (!sdp.empty()) check_sdp(sdp);
  return 0;
}
