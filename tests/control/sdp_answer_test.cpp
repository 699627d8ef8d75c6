// The SRS's SDP answer (control/siprec/sdp_answer.hpp) from byte-array offers: what each offered
// m-line becomes, and the answer text read back with the product's own SDP parser.
#include <gtest/gtest.h>

#include "control/sip/sdp.hpp"
#include "control/siprec/sdp_answer.hpp"

namespace callrec::control::siprec {
namespace {

sip::Sdp offer(const std::string& mlines, const std::string& conn = "c=IN IP4 192.0.2.10\r\n") {
  static std::string keep;  // parse_sdp returns views: keep the bytes alive
  keep = "v=0\r\no=src 1 1 IN IP4 192.0.2.10\r\ns=-\r\n" + conn + "t=0 0\r\n" + mlines;
  sip::Sdp s;
  EXPECT_TRUE(sip::parse_sdp(keep, s));
  return s;
}

TEST(SdpAnswer, G711IsPreferredTelephoneEventKeptLabelEchoedRecvonly) {
  auto s = offer("m=audio 4000 RTP/AVP 18 9 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=label:leg-a\r\na=sendonly\r\n");
  const MediaPlan p = plan_media(s.media[0]);
  ASSERT_TRUE(p.accepted) << p.reject_reason;
  EXPECT_EQ(p.codec, "PCMA") << "the first G.711 of the offer";
  EXPECT_EQ(p.formats, "8 101");
  EXPECT_EQ(p.label, "leg-a");
  EXPECT_FALSE(p.paused);
  ASSERT_TRUE(p.payloads);
  // Every offered format is named for the writer, so a codec switch mid-call is still recorded.
  EXPECT_EQ(std::string(p.payloads->entries[9].name), "G722");
  EXPECT_EQ(p.payloads->entries[101].kind, fileio::PayloadMap::Kind::kTelephoneEvent);
  EXPECT_EQ(p.source.family, 4);
}

TEST(SdpAnswer, OtherCodecsAreAcceptedByNameAndUnnamedOnesAreNot) {
  auto s = offer("m=audio 4000 RTP/AVP 18\r\na=sendonly\r\nm=audio 4002 RTP/AVP 96\r\na=sendonly\r\n"
                 "m=audio 4004 RTP/AVP 96\r\na=rtpmap:96 opus/48000/2\r\na=sendonly\r\n");
  const MediaPlan g729 = plan_media(s.media[0]);
  ASSERT_TRUE(g729.accepted);
  EXPECT_EQ(g729.codec, "G729");
  const MediaPlan unnamed = plan_media(s.media[1]);
  EXPECT_FALSE(unnamed.accepted) << "a dynamic type without rtpmap names nothing";
  EXPECT_EQ(unnamed.reject_reason, "no usable codec");
  const MediaPlan opus = plan_media(s.media[2]);
  ASSERT_TRUE(opus.accepted);
  EXPECT_EQ(opus.codec, "opus");
  EXPECT_NE(opus.rtpmaps.front().find("opus/48000/2"), std::string::npos);
}

TEST(SdpAnswer, InactiveHoldAndMissingConnectionLine) {
  auto s = offer("m=audio 4000 RTP/AVP 0\r\na=inactive\r\nm=audio 4002 RTP/AVP 0\r\nc=IN IP4 0.0.0.0\r\na=sendonly\r\n"
                 "m=audio 4004 RTP/AVP 0\r\na=sendonly\r\n",
                 "");
  EXPECT_TRUE(plan_media(s.media[0]).paused) << "inactive";
  EXPECT_TRUE(plan_media(s.media[1]).paused) << "c=0.0.0.0";
  const MediaPlan open = plan_media(s.media[2]);
  EXPECT_FALSE(open.paused) << "no c= at all (OpenSIPS) is not a hold";
  EXPECT_EQ(open.source.family, 0);
}

TEST(SdpAnswer, VideoAndNonRtpAreRejectedWithPortZeroInTheAnswer) {
  auto s = offer("m=audio 4000 RTP/AVP 0\r\na=label:1\r\na=sendonly\r\nm=video 4002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=label:2\r\n"
                 "m=audio 4004 udp/bfcp *\r\n");
  std::vector<MediaPlan> plans;
  for (const auto& m : s.media) plans.push_back(plan_media(m));
  EXPECT_TRUE(plans[0].accepted);
  EXPECT_FALSE(plans[1].accepted);
  EXPECT_FALSE(plans[2].accepted);
  plans[0].port = 40000;
  const std::string text = format_answer(plans, "198.51.100.7", 77, 3);
  sip::Sdp a;
  ASSERT_TRUE(sip::parse_sdp(text, a)) << text;
  ASSERT_EQ(a.media.size(), 3u) << "one m-line per offered m-line";
  EXPECT_EQ(a.media[0].port, 40000);
  EXPECT_EQ(a.media[0].dir, sip::Direction::kRecvOnly);
  EXPECT_EQ(a.media[0].label, "1");
  EXPECT_EQ(a.media[1].port, 0);
  EXPECT_EQ(a.media[1].media, "video");
  EXPECT_EQ(a.media[1].formats, "96") << "a rejected stream keeps the offer's formats";
  EXPECT_EQ(a.media[1].label, "2");
  EXPECT_EQ(a.media[2].port, 0);
  EXPECT_NE(text.find("o=callrec 77 3 IN IP4 198.51.100.7"), std::string::npos) << text;
  EXPECT_NE(text.find("c=IN IP4 198.51.100.7"), std::string::npos);
  const std::string v6 = format_answer(plans, "2001:db8::7", 77, 4);
  EXPECT_NE(v6.find("c=IN IP6 2001:db8::7"), std::string::npos) << v6;
}

TEST(SdpAnswer, SrtpIsAnsweredWithOurOwnKeyAndUnusableCryptoIsRejected) {
  auto s = offer(
      "m=audio 4000 RTP/SAVP 0\r\na=crypto:1 F8_128_HMAC_SHA1_80 inline:MTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5QUJjZGVm\r\n"
      "a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\na=sendonly\r\n"
      "m=audio 4002 RTP/SAVP 0\r\na=sendonly\r\n"
      "m=audio 4004 RTP/SAVP 0\r\na=crypto:1 F8_128_HMAC_SHA1_80 inline:MTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5QUJjZGVm\r\na=sendonly\r\n");
  MediaPlan p = plan_media(s.media[0]);
  ASSERT_TRUE(p.accepted) << p.reject_reason;
  ASSERT_TRUE(p.srtp_in);
  ASSERT_TRUE(p.srtp_answer);
  EXPECT_EQ(p.srtp_in->tag, 2u) << "the first line with a suite we can decrypt";
  EXPECT_EQ(p.srtp_answer->tag, 2u);
  EXPECT_EQ(p.srtp_answer->suite, p.srtp_in->suite);
  EXPECT_NE(p.srtp_answer->key_salt, p.srtp_in->key_salt) << "our own key, not the SRC's";
  // A re-offer with the same line keeps our key (the SRC need not re-key).
  const MediaPlan again = plan_media(s.media[0], &p);
  ASSERT_TRUE(again.srtp_answer);
  EXPECT_EQ(again.srtp_answer->key_salt, p.srtp_answer->key_salt);
  p.port = 40000;
  const std::string text = format_answer({p}, "192.0.2.1", 1, 1);
  EXPECT_NE(text.find("m=audio 40000 RTP/SAVP 0"), std::string::npos) << text;
  EXPECT_NE(text.find("a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:"), std::string::npos) << text;
  EXPECT_FALSE(plan_media(s.media[1]).accepted) << "SAVP without a key";
  const MediaPlan bad = plan_media(s.media[2]);
  EXPECT_FALSE(bad.accepted) << "only an unsupported suite: refused, never recorded as noise";
  EXPECT_NE(bad.reject_reason.find("crypto"), std::string::npos) << bad.reject_reason;
}

}  // namespace
}  // namespace callrec::control::siprec
