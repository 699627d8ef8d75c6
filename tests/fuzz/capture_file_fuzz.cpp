// libFuzzer target for the capture file readers (dataplane/capture: classic pcap and pcapng,
// over memory as open_file() reads a file). The first input byte picks the burst size; the
// rest is the file. Checked on every input:
// - every frame lies inside the input (the readers hand out frames in place);
// - a pcap frame is at most 256 KiB; the count is 1..max per burst, 0 or -1 only at the end,
//   and an error always says what;
// - bursts of any size give the same frames as one at a time.
// Any violated property aborts (a finding), as does any sanitizer report.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <span>
#include <vector>

#include "dataplane/capture/capture.hpp"

namespace {

using namespace callrec::dataplane::capture;

void check(bool ok) {
  if (!ok) std::abort();
}

struct Seen {
  const std::byte* data;
  std::size_t len;
  std::uint32_t link, orig_len;
  std::uint64_t ts_ns;
  bool operator==(const Seen&) const = default;
};

std::vector<Seen> read_all(FrameSource& src, unsigned max, std::span<const std::byte> in) {
  std::vector<Seen> out;
  std::vector<Frame> f(max);
  for (int calls = 0;; ++calls) {
    const int rc = src.read_burst(f.data(), max);
    check(rc >= -1 && rc <= static_cast<int>(max));
    if (rc <= 0) {
      check(rc == 0 || !src.error().empty());
      check(src.read_burst(f.data(), max) == rc);  // the end stays the end
      break;
    }
    for (int i = 0; i < rc; ++i) {
      const Frame& x = f[static_cast<std::size_t>(i)];
      check(x.data.empty() || (x.data.data() >= in.data() && x.data.data() + x.data.size() <= in.data() + in.size()));
      out.push_back({x.data.data(), x.data.size(), x.link, x.orig_len, x.ts_ns});
    }
    check(calls < (1 << 22));
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const unsigned max = 1 + data[0] % 32;
  const std::span<const std::byte> in(reinterpret_cast<const std::byte*>(data + 1), size - 1);
  for (int pass = 0; pass < 2; ++pass) {
    auto a = pass == 0 ? capture_from_memory(in) : pcapng_from_memory(in);
    auto b = pass == 0 ? capture_from_memory(in) : pcapng_from_memory(in);
    if (!a) {
      check(!b);
      continue;
    }
    const auto burst = read_all(*a, max, in);
    const auto one = read_all(*b, 1, in);
    check(burst == one);
    check(a->error() == b->error());
  }
  return 0;
}
