// SIP recognised by content: the lane's test for "is this datagram (or stream start) SIP".
#include "dataplane/decode/decode.hpp"

namespace callrec::dataplane::decode {

namespace {
char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }
}  // namespace

bool looks_like_sip(std::string_view d) {
  if (d.size() < 12) return false;
  if (d.starts_with("SIP/2.0 ")) return d[8] >= '1' && d[8] <= '6';
  // METHOD SP: a token of capitals, then " SIP/2.0" at the end of the same line
  std::size_t i = 0;
  while (i < d.size() && i < 32 && d[i] >= 'A' && d[i] <= 'Z') ++i;
  if (i < 3 || i >= d.size() || d[i] != ' ') return false;
  std::string_view line = d.substr(0, std::min<std::size_t>(d.size(), 2048));
  const std::size_t nl = line.find('\n', i);
  if (nl == std::string_view::npos) return false;
  line = line.substr(0, nl);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.size() <= 8) return false;
  static constexpr std::string_view kVer = " sip/2.0";
  for (std::size_t k = 0; k < kVer.size(); ++k)
    if (lower(line[line.size() - 8 + k]) != kVer[k]) return false;
  return true;
}

}  // namespace callrec::dataplane::decode
