#pragma once
// Passive capture's connection manager: follows SIP dialogs seen on a mirror (any port, UDP and
// TCP), reads SDP offer/answer wherever it appears (INVITE/18x/2xx, delayed offer in 2xx/ACK,
// PRACK, UPDATE, re-INVITE, multipart bodies), tells the span lane which endpoints belong to
// which direction of which call, and turns each call into one recording of two observed
// streams (caller -> callee, callee -> caller) through the session manager.
//
// A call is keyed by Call-ID and the caller's From tag, so the two legs of a B2BUA that keeps
// the Call-ID are two calls, and a message is attributed to its call by From tag (sent by the
// caller) or To tag (sent by the callee). Everything runs on packet time: a capture file
// processed at full speed gives the same calls, files and times as the same traffic live.
//
// What becomes a catalog entry: every call that got an answer (recorded, or marked no_media
// when no RTP was seen), and every call attempt that got any response from the callee side
// (rejected, cancelled: final response kept). INVITEs nobody answered are only counted, so a
// flood of them (Call-ID churn) costs bounded memory and no catalog rows.
//
// Bounded: at most max_calls calls and max_pending unanswered INVITEs, oldest evicted first
// (counted). Thread: the control thread (SpanSink callbacks: the lane's when it runs on the
// control thread, SpanLaneGroup::poll_events() when the lanes have threads of their own).
#include <array>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "control/session_manager.hpp"
#include "control/sip/sdp.hpp"
#include "control/sip/sip_message.hpp"
#include "dataplane/span/span_control.hpp"

namespace callrec::control::span {

#define CALLREC_SPAN_TRACKER_COUNTERS(_)                                                      \
  _(sip_requests, "SIP requests seen")                                                       \
  _(sip_responses, "SIP responses seen")                                                     \
  _(sip_invite, "INVITEs (initial, retransmitted and re-INVITEs)")                           \
  _(sip_ack, "ACKs")                                                                         \
  _(sip_bye, "BYEs")                                                                         \
  _(sip_cancel, "CANCELs")                                                                   \
  _(sip_prack, "PRACKs")                                                                     \
  _(sip_update, "UPDATEs")                                                                   \
  _(sip_other, "other SIP requests (REGISTER, OPTIONS, SUBSCRIBE, NOTIFY, REFER, INFO ...)") \
  _(sip_tcp, "SIP messages framed from TCP streams")                                         \
  _(sip_after_end, "SIP of calls that just ended (200 to BYE, retransmissions): absorbed")    \
  _(calls_joined, "calls first seen by a response (their INVITE was not captured)")           \
  _(sip_bad, "SIP messages that do not parse (bad start line, header, Content-Length)")      \
  _(sip_stray, "in-dialog SIP of calls not followed (capture started mid-call, evicted)")    \
  _(sdp, "SDP bodies read")                                                                  \
  _(sdp_bad, "SDP bodies that are not SDP, or truncated")                                    \
  _(media_moved, "times a party's media endpoint changed (re-INVITE, UPDATE, direct media)") \
  _(calls, "calls followed (INVITE dialogs)")                                                \
  _(calls_answered, "calls answered")                                                        \
  _(calls_recorded, "recordings started for calls")                                          \
  _(calls_failed, "calls rejected with a final response (3xx-6xx)")                          \
  _(calls_cancelled, "calls cancelled before an answer")                                     \
  _(calls_hangup, "calls ended by BYE")                                                      \
  _(calls_timeout, "calls closed by the media and signalling timeout")                       \
  _(calls_capture_end, "calls still open at the end of a capture file")                      \
  _(calls_evicted, "calls dropped to stay within --span-max-calls")                          \
  _(invites_unanswered, "INVITEs that got no response before the timeout (no catalog row)")  \
  _(pending_evicted, "unanswered INVITEs dropped to stay within --span-max-pending")         \
  _(record_refused, "recordings the session manager refused (no space ...)")                 \
  _(dtmf, "DTMF digits (RFC 4733) kept as catalog events")                                   \
  _(directions_recorded, "call directions (one party's RTP) recorded")                      \
  _(calls_no_media, "answered calls whose media was never seen (catalogued, marked no_media)")

enum TrackerCounter : unsigned {
#define CALLREC_TRACKER_ENUM(name, help) kT_##name,
  CALLREC_SPAN_TRACKER_COUNTERS(CALLREC_TRACKER_ENUM)
#undef CALLREC_TRACKER_ENUM
      kTrackerCounterCount
};
inline constexpr std::array<dataplane::decode::CounterInfo, kTrackerCounterCount> kTrackerCounterInfo = {{
#define CALLREC_TRACKER_INFO(name, help) {#name, help},
    CALLREC_SPAN_TRACKER_COUNTERS(CALLREC_TRACKER_INFO)
#undef CALLREC_TRACKER_INFO
}};

struct TrackerOptions {
  std::size_t max_calls = 200'000;
  std::size_t max_pending = 50'000;          ///< INVITEs without any response
  std::uint64_t invite_timeout_ns = 32'000'000'000ull;    ///< no response at all (64*T1)
  std::uint64_t ringing_timeout_ns = 300'000'000'000ull;  ///< provisional, no final response
  std::uint64_t media_timeout_ns = 60'000'000'000ull;     ///< answered: no RTP and no SIP
  std::uint64_t held_timeout_ns = 7'200'000'000'000ull;   ///< answered and on hold
  /// RTP sent just before the BYE crosses it on the wire: the recording ends this long after
  /// the BYE (packet time), its end time stays the BYE's (or the last packet's).
  std::uint64_t bye_tail_ns = 2'000'000'000ull;
  std::string device = "span";               ///< the recordings' device directory
  fileio::AssemblerOptions assembler;        ///< base options (payload map added per stream)
};

class CallTracker final : public dataplane::SpanSink, public RecordingOwner {
 public:
  CallTracker(TrackerOptions o, SessionManager& sessions, dataplane::SpanControl& lanes);
  ~CallTracker() override;

  // SpanSink
  void on_sip(std::string_view msg, const dataplane::decode::Endpoint& src, const dataplane::decode::Endpoint& dst,
              std::uint64_t ts_ns) override;
  std::size_t on_sip_stream(std::string_view bytes, bool lost, const dataplane::decode::Endpoint& src,
                            const dataplane::decode::Endpoint& dst, std::uint64_t ts_ns) override;
  void on_dtmf(fileio::StreamId stream, std::string_view digit, std::uint32_t duration_ms,
               std::uint64_t ts_ns) override;
  // RecordingOwner
  void on_server_stop(RecordingHandle h, const std::string& call_id, const std::string& reason) override;

  /// Timeouts by packet time (call about once per second of packet time).
  void tick(std::uint64_t now_ns);
  /// Ends every call (capture_end at the end of a file, shutdown when the daemon stops).
  void end_all(const std::string& reason, std::uint64_t now_ns);

  [[nodiscard]] std::uint64_t counter(TrackerCounter c) const { return c_[c]; }
  [[nodiscard]] std::size_t calls() const { return calls_.size(); }
  [[nodiscard]] std::size_t pending() const { return trying_.size(); }

 private:
  struct Party {
    std::string number, name, tag, user_agent;
    dataplane::decode::Endpoint sig;
    dataplane::decode::Endpoint media, rtcp;
    bool has_media = false, has_rtcp = false, held = false, had_sdp = false;
    std::vector<std::pair<std::uint8_t, std::string>> encodings;  ///< pt -> name (this party's SDP)
    std::vector<std::uint32_t> clocks;
    std::uint32_t ptime = 0;
    std::string codec;  ///< the first format of its latest audio m-line
  };
  enum class State : std::uint8_t { kTrying, kEarly, kAnswered, kEnded };
  struct Call {
    std::string key, call_id;
    Party party[2];  ///< 0 caller, 1 callee
    State state = State::kTrying;
    int final_code = 0;
    bool responded = false;  ///< anything from the callee side (a catalog row at the end)
    bool rec_failed = false;
    std::uint64_t invite_ns = 0, answer_ns = 0, last_sip_ns = 0;
    std::uint64_t bye_ns = 0;  ///< BYE seen: the call ends kByeTail later (RTP in flight)
    std::string pai, hangup_by, reason_hdr;
    RecordingHandle rec = 0;
    std::array<fileio::StreamId, 2> streams{};  ///< 0: sent by the caller, 1: by the callee
    std::list<Call*>::iterator age;
    bool in_trying = true;
  };
  void handle(const sip::Message& m, const dataplane::decode::Endpoint& src,
              const dataplane::decode::Endpoint& dst, std::uint64_t ts_ns);
  Call* create(const sip::Message& m, const sip::NameAddr& from, const sip::NameAddr& to,
               const dataplane::decode::Endpoint& src, const dataplane::decode::Endpoint& dst, std::uint64_t ts_ns);
  void apply_sdp(Call& c, unsigned who, std::string_view body, std::string_view content_type, std::uint64_t ts_ns);
  void install(Call& c, unsigned who);
  void maybe_start(Call& c, std::uint64_t ts_ns);
  bool start_recording(Call& c, std::uint64_t ts_ns);
  std::shared_ptr<const fileio::PayloadMap> payload_map(const Call& c, unsigned receiver);
  /// Ends the call and erases it. reason "hangup" is the parties' own end; others are ours.
  void end(Call& c, const std::string& reason, std::uint64_t ts_ns);
  std::vector<Call*> closing_;  ///< calls with a BYE, in BYE order
  void promote(Call& c);  ///< out of the unanswered list
  void erase(Call& c);
  Call* find(std::string_view call_id, std::string_view tag);
  /// Calls that ended recently (32 s of packet time): their late messages are not strays.
  bool recently_ended(std::string_view call_id, std::string_view tag);
  void remember_end(const std::string& key, std::uint64_t ts_ns);

  TrackerOptions o_;
  SessionManager& sessions_;
  dataplane::SpanControl& lane_;  ///< one lane on this thread, or the lanes of a DPDK mirror
  std::array<std::uint64_t, kTrackerCounterCount> c_{};
  std::unordered_map<std::string, std::unique_ptr<Call>> calls_;
  std::list<Call*> trying_;   ///< unanswered INVITEs, oldest first
  std::list<Call*> others_;   ///< calls with a response, oldest first
  std::unordered_map<RecordingHandle, Call*> by_rec_;
  std::unordered_map<fileio::StreamId, std::pair<Call*, unsigned>> by_stream_;
  std::string key_buf_;
  std::unordered_map<std::string, std::uint64_t> ended_;
  std::unordered_map<std::string, std::shared_ptr<const fileio::PayloadMap>> maps_;  ///< interned
  std::list<std::pair<std::string, std::uint64_t>> ended_order_;
};

}  // namespace callrec::control::span
