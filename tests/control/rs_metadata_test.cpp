// SIPREC recording-metadata parser tests (RFC 7865). Two kinds:
// - the vendor bodies of the shared test data (../shared/testdata/siprec/, read at run time and
//   skipped when absent): each document's session, participants, aors, label -> participant
//   mapping and caller, with the values read from the files;
// - documents written here: RFC 7865-shaped snapshots and partial updates, prefixes, no
//   namespace, escapes, and what must be refused (DTDs, entity bombs, XXE, truncation, size,
//   counts).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "control/sip/rs_metadata.hpp"
#include "control/sip/sdp.hpp"

namespace callrec::control::sip {
namespace {

namespace fs = std::filesystem;

fs::path siprec_dir() { return fs::path(CALLREC_SHARED_TESTDATA_DIR) / "siprec"; }

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

#define REQUIRE_SIPREC_FILE(path)                                                              \
  do {                                                                                         \
    std::error_code ec_;                                                                       \
    if (!fs::is_regular_file(path, ec_))                                                       \
      GTEST_SKIP() << "shared test data absent: " << (path) << " (../shared/testdata/siprec)"; \
  } while (0)

/// A vendor message body (siprec-msg-*.txt): its metadata part and its SDP. The files hold the
/// multipart body with LF line endings (Intrado's holds the whole INVITE: head, blank line, body).
struct VendorBody {
  std::string text;  // owns the bytes the views point into
  std::string_view metadata;
  std::string_view sdp;
};

void load_vendor_body(const fs::path& p, VendorBody& vb) {
  vb.text = read_file(p);
  std::string_view body = vb.text;
  std::string content_type = "multipart/mixed";  // the boundary is found from the body
  if (body.starts_with("INVITE ")) {
    const std::size_t end = body.find("\n\n");
    ASSERT_NE(end, std::string_view::npos);
    const std::string_view head = body.substr(0, end);
    const std::size_t ct = head.find("\nContent-Type:");
    ASSERT_NE(ct, std::string_view::npos);
    const std::size_t eol = head.find('\n', ct + 1);
    content_type = std::string(head.substr(ct + 14, eol == std::string_view::npos ? eol : eol - ct - 14));
    body = body.substr(end + 2);
  }
  std::vector<BodyPart> parts;
  ASSERT_TRUE(split_multipart(content_type, body, parts)) << p;
  for (const BodyPart& part : parts) {
    if (part.content_disposition.find("recording-session") != std::string_view::npos ||
        part.content_type.find("rs-metadata") != std::string_view::npos)
      vb.metadata = part.body;
  }
  vb.sdp = find_sdp(content_type, body);
  ASSERT_FALSE(vb.metadata.empty()) << "no recording-session part in " << p;
}

/// The rs-metadata documents inside the CDATA messages of a SIPp scenario, in order: from the
/// "<?xml" declaration to the close tag of the root that follows it.
std::vector<std::string> sipp_metadata(const fs::path& p) {
  const std::string text = read_file(p);
  std::vector<std::string> out;
  std::size_t pos = 0;
  while ((pos = text.find("<![CDATA[", pos)) != std::string::npos) {
    const std::size_t end = text.find("]]>", pos);
    if (end == std::string::npos) break;
    const std::string_view cdata = std::string_view(text).substr(pos, end - pos);
    pos = end;
    const std::size_t decl = cdata.find("<?xml");
    if (decl == std::string_view::npos) continue;
    const std::size_t decl_end = cdata.find("?>", decl);
    if (decl_end == std::string_view::npos) continue;
    const std::size_t root = cdata.find('<', decl_end);
    if (root == std::string_view::npos) continue;
    const std::size_t name_end = cdata.find_first_of(" \t\r\n>", root);
    const std::string close = "</" + std::string(cdata.substr(root + 1, name_end - root - 1)) + ">";
    const std::size_t last = cdata.rfind(close);
    if (last == std::string_view::npos || last < root) continue;
    out.emplace_back(cdata.substr(decl, last + close.size() - decl));
  }
  return out;
}

RsMetadata parse_ok(std::string_view xml) {
  RsMetadata m;
  const MetadataError e = parse_rs_metadata(xml, m);
  EXPECT_EQ(e, MetadataError::kOk) << metadata_error_name(e) << "\n" << xml;
  return m;
}

MetadataError parse_err(std::string_view xml) {
  RsMetadata m;
  m.session_id = "stale";
  const MetadataError e = parse_rs_metadata(xml, m);
  if (e != MetadataError::kOk) {
    EXPECT_EQ(m, RsMetadata{}) << "the output is cleared on an error";
  }
  return e;
}

using Strings = std::vector<std::string>;

/// The aor of the participant sending the stream with this label ("" when none).
std::string sender_aor(const RsMetadata& m, std::string_view label) {
  const RsParticipant* p = m.sender_of_label(label);
  return p == nullptr ? std::string() : p->aor;
}
std::string caller_aor(const RsMetadata& m) {
  const RsParticipant* p = m.caller();
  return p == nullptr ? std::string() : p->aor;
}

/// Every a=label of the offer names a stream of the metadata, and that stream's sender.
void expect_sdp_labels_map(const RsMetadata& m, std::string_view sdp_body, const Strings& aors) {
  Sdp sdp;
  ASSERT_TRUE(parse_sdp(sdp_body, sdp));
  ASSERT_EQ(sdp.media.size(), aors.size());
  for (std::size_t i = 0; i < aors.size(); ++i)
    EXPECT_EQ(sender_aor(m, sdp.media[i].label), aors[i]) << "m-line " << i << " label " << sdp.media[i].label;
}

// ---------------------------------------------------------------- vendor bodies (shared data)

TEST(RsMetadataVendor, AcmeSbc) {
  const fs::path p = siprec_dir() / "siprec-msg-acme-sbc-offer-body.txt";
  REQUIRE_SIPREC_FILE(p);
  VendorBody vb;
  ASSERT_NO_FATAL_FAILURE(load_vendor_body(p, vb));
  const RsMetadata m = parse_ok(vb.metadata);
  EXPECT_EQ(m.data_mode, "complete");  // <datamode>, namespace urn:ietf:params:xml:ns:recording
  EXPECT_EQ(m.session_id, "AavRXwIIQj1Q39eJulTipQ==");  // session@id (draft form)
  EXPECT_EQ(m.group_id, "");
  EXPECT_EQ(m.recorded_call_id, "");
  ASSERT_EQ(m.participants.size(), 2U);
  EXPECT_EQ(m.participants[0].id, "fSD3PFErSjNTHLDiXCELjw==");
  EXPECT_EQ(m.participants[0].aor, "sip:9000@192.168.50.102");
  EXPECT_EQ(m.participants[0].name, "9000");
  EXPECT_EQ(m.participants[0].send, Strings{"Q4O8SGLQSilXHUGQX2zd8Q=="});
  EXPECT_EQ(m.participants[0].caller_hint, 1);  // apkt:callingParty true
  EXPECT_EQ(m.participants[1].id, "EbccNyypRlFYXTm4iw8hxw==");
  EXPECT_EQ(m.participants[1].aor, "sip:1002@192.168.50.10");
  EXPECT_EQ(m.participants[1].send, Strings{"l1NyQy8ORSlouUj2G3UE/A=="});
  EXPECT_EQ(m.participants[1].caller_hint, -1);  // apkt:callingParty false
  ASSERT_EQ(m.streams.size(), 2U);
  EXPECT_EQ(m.streams[0].id, "Q4O8SGLQSilXHUGQX2zd8Q==");
  EXPECT_EQ(m.streams[0].label, "16777227");
  EXPECT_EQ(m.streams[1].label, "16777228");
  EXPECT_EQ(sender_aor(m, "16777227"), "sip:9000@192.168.50.102");
  EXPECT_EQ(sender_aor(m, "16777228"), "sip:1002@192.168.50.10");
  EXPECT_EQ(caller_aor(m), "sip:9000@192.168.50.102");
  expect_sdp_labels_map(m, vb.sdp, {"sip:9000@192.168.50.102", "sip:1002@192.168.50.10"});
}

TEST(RsMetadataVendor, AvayaViaAcmeSbc) {
  const fs::path p = siprec_dir() / "siprec-msg-avaya-via-acme-sbc-offer-body.txt";
  REQUIRE_SIPREC_FILE(p);
  VendorBody vb;
  ASSERT_NO_FATAL_FAILURE(load_vendor_body(p, vb));
  const RsMetadata m = parse_ok(vb.metadata);
  EXPECT_EQ(m.data_mode, "complete");
  EXPECT_EQ(m.session_id, "0rBXFi0CTBB0j8HyGBBrlg==");
  // The leg's Call-ID in apkt:header label="Call-ID" wins over the Avaya UCID (apkt:ucid).
  EXPECT_EQ(m.recorded_call_id, "134485702_44821128@10.10.128.62");
  ASSERT_EQ(m.participants.size(), 2U);
  EXPECT_EQ(m.participants[0].id, "ARlTfnirTkxisET9jl8njg==");
  EXPECT_EQ(m.participants[0].aor, "sip:31624895902@10.10.128.62");
  EXPECT_EQ(m.participants[0].name, "31624895902");
  EXPECT_EQ(m.participants[0].caller_hint, 1);
  EXPECT_EQ(m.participants[1].aor, "sip:33187164021@sip.webhelpgroupe.lan");
  EXPECT_EQ(m.participants[1].send, Strings{"oOmIeCrQRZ1zaHo/DHE5og=="});
  EXPECT_EQ(m.participants[1].caller_hint, -1);
  ASSERT_EQ(m.streams.size(), 2U);
  EXPECT_EQ(sender_aor(m, "201835599"), "sip:31624895902@10.10.128.62");
  EXPECT_EQ(sender_aor(m, "201835600"), "sip:33187164021@sip.webhelpgroupe.lan");
  EXPECT_EQ(caller_aor(m), "sip:31624895902@10.10.128.62");
  expect_sdp_labels_map(m, vb.sdp, {"sip:31624895902@10.10.128.62", "sip:33187164021@sip.webhelpgroupe.lan"});

  // Without the Call-ID header the UCID is what identifies the call.
  std::string no_header(vb.metadata);
  const std::size_t h = no_header.find("<apkt:header");
  const std::size_t he = no_header.find("</apkt:header>");
  ASSERT_NE(h, std::string::npos);
  no_header.erase(h, he + 14 - h);
  EXPECT_EQ(parse_ok(no_header).recorded_call_id, "00FA081003B9CF5E7DF7E5;encoding=hex");
}

TEST(RsMetadataVendor, BroadWorksTagsStripped) {
  // The tags of this BroadWorks document were lost on the way (text only inside the root, and a
  // Content-Type of "application/ +xml"): well-formed, a recording root, nothing usable. It is
  // accepted as empty metadata (the SRS then maps streams by m-line order).
  const fs::path p = siprec_dir() / "siprec-msg-broadworks-malformed-offer-body.txt";
  REQUIRE_SIPREC_FILE(p);
  VendorBody vb;
  ASSERT_NO_FATAL_FAILURE(load_vendor_body(p, vb));
  ASSERT_TRUE(vb.metadata.starts_with("<recording_metadata"));
  const RsMetadata m = parse_ok(vb.metadata);
  EXPECT_EQ(m.data_mode, "");
  EXPECT_EQ(m.session_id, "");
  EXPECT_TRUE(m.participants.empty());
  EXPECT_TRUE(m.streams.empty());
  EXPECT_EQ(m.caller(), nullptr);
  EXPECT_EQ(m.sender_of_label("1"), nullptr);
}

TEST(RsMetadataVendor, CiscoCubeWithGtd) {
  const fs::path p = siprec_dir() / "siprec-msg-cisco-cube-offer-body-with-gtd.txt";
  REQUIRE_SIPREC_FILE(p);
  VendorBody vb;
  ASSERT_NO_FATAL_FAILURE(load_vendor_body(p, vb));
  const RsMetadata m = parse_ok(vb.metadata);
  EXPECT_EQ(m.data_mode, "complete");
  EXPECT_EQ(m.session_id, "kQNhKFdEEeeJ9tD/VsPGWA==");  // session@session_id (RFC 7865)
  EXPECT_EQ(m.recorded_call_id, "e9fffff2020a598b86962867715db0cf;remote=cd0f7093d62c5f0697098fd69a4aa57b");
  // Elements interleaved (participant, stream, participant, stream, then the associations).
  ASSERT_EQ(m.participants.size(), 2U);
  EXPECT_EQ(m.participants[0].id, "kQNhKFdEEeeJ99D/VsPGWA==");
  EXPECT_EQ(m.participants[0].aor, "sip:7301@35.162.237.204");
  EXPECT_EQ(m.participants[0].name, "");
  EXPECT_EQ(m.participants[0].send, Strings{"kQOH5VdEEeeJ/ND/VsPGWA=="});
  EXPECT_EQ(m.participants[0].recv, Strings{"kQOH5VdEEeeJ/dD/VsPGWA=="});
  EXPECT_EQ(m.participants[1].id, "kQNhKFdEEeeJ+ND/VsPGWA==");
  EXPECT_EQ(m.participants[1].aor, "sip:7300@35.162.237.204");
  EXPECT_EQ(m.participants[1].name, "7300");  // <name xml:lang="en">
  EXPECT_EQ(m.participants[1].send, Strings{"kQOH5VdEEeeJ/dD/VsPGWA=="});
  ASSERT_EQ(m.streams.size(), 2U);
  EXPECT_EQ(m.streams[1].id, "kQOH5VdEEeeJ/dD/VsPGWA==");
  EXPECT_EQ(m.streams[1].label, "2");
  EXPECT_EQ(sender_aor(m, "1"), "sip:7301@35.162.237.204");
  EXPECT_EQ(sender_aor(m, "2"), "sip:7300@35.162.237.204");
  EXPECT_EQ(caller_aor(m), "sip:7301@35.162.237.204");  // no hint: the first sender
  expect_sdp_labels_map(m, vb.sdp, {"sip:7301@35.162.237.204", "sip:7300@35.162.237.204"});
}

TEST(RsMetadataVendor, CiscoInactive) {
  const fs::path p = siprec_dir() / "siprec-msg-cisco-inactive-offer-body.txt";
  REQUIRE_SIPREC_FILE(p);
  VendorBody vb;
  ASSERT_NO_FATAL_FAILURE(load_vendor_body(p, vb));
  const RsMetadata m = parse_ok(vb.metadata);
  EXPECT_EQ(m.session_id, "GZBIusaXEeuxxK1dFIaIyA==");
  EXPECT_EQ(m.recorded_call_id, "f845891467cf5c2189987435807bd432;remote=1aa1123b8825c906d03681ba23102629");
  ASSERT_EQ(m.participants.size(), 2U);
  EXPECT_EQ(m.participants[0].aor, "sip:0733165805@192.168.40.34");
  EXPECT_EQ(m.participants[1].aor, "sip:+972546136443@192.168.10.140");
  // Empty participantstreamassoc elements: nobody sends, and the document said so.
  for (const RsParticipant& pt : m.participants) {
    EXPECT_TRUE(pt.send.empty());
    EXPECT_TRUE(pt.recv.empty());
    EXPECT_TRUE(pt.streams_given);
  }
  ASSERT_EQ(m.streams.size(), 2U);
  EXPECT_EQ(m.sender_of_label("1"), nullptr);
  EXPECT_EQ(m.sender_of_label("2"), nullptr);
  EXPECT_EQ(caller_aor(m), "sip:0733165805@192.168.40.34");  // no hint, no sender: the first
}

TEST(RsMetadataVendor, IntradoViperFullInvite) {
  const fs::path p = siprec_dir() / "siprec-msg-intrado-viper-full-invite.txt";
  REQUIRE_SIPREC_FILE(p);
  VendorBody vb;
  ASSERT_NO_FATAL_FAILURE(load_vendor_body(p, vb));
  const RsMetadata m = parse_ok(vb.metadata);
  EXPECT_EQ(m.data_mode, "complete");  // <dataMode>
  EXPECT_EQ(m.group_id, "ZWIxYWRkOTAtYjg4Ny00ZWVhLWFjYWMtZWRl");
  EXPECT_EQ(m.session_id, "ZGI2NDQ1MzItODBmOC00ZDBhLTlhMDMtNjg2");
  EXPECT_EQ(m.recorded_call_id, "");  // the INVITE's Call-ID is the recording session's
  ASSERT_EQ(m.participants.size(), 1U);
  const RsParticipant& pt = m.participants[0];
  EXPECT_EQ(pt.id, "YTllOTVhZTgtZjY4MS00YTBjLWIxOGUtYTQw");
  EXPECT_EQ(pt.aor, "4058327108@10.105.190.136:5060");  // no scheme
  EXPECT_EQ(pt.name, "");
  EXPECT_EQ(pt.caller_hint, 1);  // <role>calling</role>
  EXPECT_EQ(pt.send, Strings{"ZDY2YTc1YTMtYTAzZi00ZDQwLTkzNmYtYTFm"});
  EXPECT_EQ(pt.recv, Strings{"ZDY2YTc1YTMtYTAzZi00ZDQwLTkzNmYtYTFm"});
  ASSERT_EQ(m.streams.size(), 1U);  // one mixed stream
  EXPECT_EQ(sender_aor(m, "1"), "4058327108@10.105.190.136:5060");
  EXPECT_EQ(caller_aor(m), "4058327108@10.105.190.136:5060");
  expect_sdp_labels_map(m, vb.sdp, {"4058327108@10.105.190.136:5060"});
}

TEST(RsMetadataVendor, OpenSipsConnectel) {
  const fs::path p = siprec_dir() / "siprec-msg-opensips-connectel-offer-body.txt";
  REQUIRE_SIPREC_FILE(p);
  VendorBody vb;
  ASSERT_NO_FATAL_FAILURE(load_vendor_body(p, vb));
  const RsMetadata m = parse_ok(vb.metadata);
  EXPECT_EQ(m.session_id, "2+hKdGY+QvCKu8HYTdBouQ==");
  EXPECT_EQ(m.recorded_call_id, "2d8abbf0769c66e15bb349f509693d60@52.57.92.239");  // sipSessionID
  ASSERT_EQ(m.participants.size(), 2U);
  EXPECT_EQ(m.participants[0].id, "WEWTz80cS1Cqdyepmu3STQ==");
  EXPECT_EQ(m.participants[0].aor, "sip:0771121212@52.57.92.239");
  EXPECT_EQ(m.participants[0].name, "test_user;lang=en-US;id=22");
  EXPECT_EQ(m.participants[1].aor, "sip:0760516936@sip-cust1.connectel.io");  // <nameID/>
  EXPECT_EQ(m.participants[1].name, "");
  ASSERT_EQ(m.streams.size(), 2U);
  EXPECT_EQ(m.streams[0].id, "EkG6jSRhQqCupqs53tna1w==");
  EXPECT_EQ(m.streams[0].label, "1");
  EXPECT_EQ(m.streams[1].label, "2");
  // OpenSIPS does not associate streams with participants: no mapping from the metadata.
  EXPECT_EQ(m.sender_of_label("1"), nullptr);
  EXPECT_EQ(m.sender_of_label("2"), nullptr);
  EXPECT_EQ(caller_aor(m), "sip:0771121212@52.57.92.239");
}

TEST(RsMetadataVendor, SemsProcomm) {
  const fs::path p = siprec_dir() / "siprec-msg-sems-procomm-offer-body.txt";
  REQUIRE_SIPREC_FILE(p);
  VendorBody vb;
  ASSERT_NO_FATAL_FAILURE(load_vendor_body(p, vb));
  const RsMetadata m = parse_ok(vb.metadata);
  EXPECT_EQ(m.session_id, "ho9aUhEQTRS+31th7sHStA==");
  EXPECT_EQ(m.recorded_call_id, "");
  ASSERT_EQ(m.participants.size(), 2U);
  EXPECT_EQ(m.participants[0].aor, "sip:016190200@87.252.209.116");
  EXPECT_EQ(m.participants[0].name, "016190200");
  EXPECT_EQ(m.participants[0].send, Strings{"HdU6Bt7GTZiHcNe4R2LHdA=="});
  EXPECT_EQ(m.participants[0].recv, Strings{"T6T6syCpRSGH1J+gwLFaIQ=="});
  EXPECT_EQ(m.participants[1].aor, "Extension-016190619@speechpath.ie");
  EXPECT_EQ(m.participants[1].name, "Speechpath-Main-Line 016190619");
  ASSERT_EQ(m.streams.size(), 2U);
  EXPECT_EQ(sender_aor(m, "a_leg"), "sip:016190200@87.252.209.116");
  EXPECT_EQ(sender_aor(m, "b_leg"), "Extension-016190619@speechpath.ie");
  EXPECT_EQ(caller_aor(m), "sip:016190200@87.252.209.116");
  expect_sdp_labels_map(m, vb.sdp, {"sip:016190200@87.252.209.116", "Extension-016190619@speechpath.ie"});
}

TEST(RsMetadataVendor, SippAvayaSbceInviteThenUpdate) {
  const fs::path p = siprec_dir() / "siprec-sipp-avaya-sbce-invite-update.xml";
  REQUIRE_SIPREC_FILE(p);
  const std::vector<std::string> docs = sipp_metadata(p);
  ASSERT_EQ(docs.size(), 2U);  // INVITE, UPDATE
  RsMetadata m = parse_ok(docs[0]);
  EXPECT_EQ(m.data_mode, "complete");
  EXPECT_EQ(m.session_id, "00FA080001000758A20EFA");
  ASSERT_EQ(m.participants.size(), 2U);
  EXPECT_EQ(m.participants[0].id, "b536ff63b7f3643d4d7b");
  EXPECT_EQ(m.participants[0].aor, "sip:13035381001@10.64.110.65");
  EXPECT_EQ(m.participants[0].send, Strings{"0ccc2d78b71d8a1ea1c7"});
  EXPECT_EQ(m.participants[1].aor, "sip:ASBCE@asbce.com");  // the placeholder participant
  EXPECT_TRUE(m.participants[1].send.empty());
  ASSERT_EQ(m.streams.size(), 2U);
  EXPECT_EQ(m.streams[1].id, "");  // stream_id="" as sent
  EXPECT_EQ(m.streams[1].label, "20");
  EXPECT_EQ(sender_aor(m, "10"), "sip:13035381001@10.64.110.65");
  EXPECT_EQ(m.sender_of_label("20"), nullptr);
  EXPECT_EQ(caller_aor(m), "sip:13035381001@10.64.110.65");

  const RsMetadata update = parse_ok(docs[1]);
  ASSERT_EQ(update.participants.size(), 2U);
  EXPECT_EQ(update.participants[1].id, "6add855be46c6970e8fd");
  merge_rs_metadata(m, update);  // complete: replaces
  EXPECT_EQ(m, update);
  EXPECT_EQ(sender_aor(m, "10"), "sip:13035381001@10.64.110.65");
  EXPECT_EQ(sender_aor(m, "20"), "sip:7204541001@10.64.110.32");
  EXPECT_EQ(caller_aor(m), "sip:13035381001@10.64.110.65");
}

TEST(RsMetadataVendor, SippBroadWorks) {
  const fs::path p = siprec_dir() / "siprec-sipp-broadworks-pause-resume.xml";
  REQUIRE_SIPREC_FILE(p);
  const std::vector<std::string> docs = sipp_metadata(p);
  ASSERT_EQ(docs.size(), 1U);  // the re-INVITEs carry SDP only
  const RsMetadata m = parse_ok(docs[0]);
  EXPECT_EQ(m.data_mode, "complete");
  EXPECT_EQ(m.group_id, "urn:uuid:6219893c-d072-43d3-ba6c-8828cf7be472");
  EXPECT_EQ(m.session_id, "urn:uuid:139ff134-7094-4ea9-a4a4-73f0c45e6a23");
  EXPECT_EQ(m.recorded_call_id, "callhalf-[call_id]:0");  // broadWorksRecordingMetadata/callID
  ASSERT_EQ(m.participants.size(), 2U);
  EXPECT_EQ(m.participants[0].id, "urn:uuid:c703d8c4-ac5b-4000-a8ad-a3342ff26072");
  EXPECT_EQ(m.participants[0].aor, "sip:8638254725");  // <aor> element
  EXPECT_EQ(m.participants[0].send, Strings{"urn:uuid:dc51a81b-aebc-4a09-8f8b-75c13ec5a4fb"});  // <send><id>
  EXPECT_EQ(m.participants[0].caller_hint, -1);  // calledPartyNumber sip:+18638254725@broadcore.com
  EXPECT_EQ(m.participants[1].aor, "sip:+19015783200@broadcore.com;user=phone");
  EXPECT_EQ(m.participants[1].caller_hint, 1);  // callingPartyNumber
  ASSERT_EQ(m.streams.size(), 1U);
  EXPECT_EQ(m.streams[0].label, "1");
  EXPECT_EQ(sender_aor(m, "1"), "sip:8638254725");
  EXPECT_EQ(caller_aor(m), "sip:+19015783200@broadcore.com;user=phone");
}

TEST(RsMetadataVendor, SippDrachtio) {
  const fs::path p = siprec_dir() / "siprec-sipp-drachtio-uac-pcap.xml";
  REQUIRE_SIPREC_FILE(p);
  const std::vector<std::string> docs = sipp_metadata(p);
  ASSERT_EQ(docs.size(), 2U);  // INVITE, re-INVITE (inactive): the same snapshot
  const RsMetadata m = parse_ok(docs[0]);
  EXPECT_EQ(m.session_id, "XoM2pKdFR8C3eX33qJKcww==");
  EXPECT_EQ(m.recorded_call_id, "hvij5wK4Wx");
  ASSERT_EQ(m.participants.size(), 2U);
  EXPECT_EQ(m.participants[0].aor, "sip:6001@localhost");
  EXPECT_EQ(m.participants[1].aor, "sip:101@localhost");
  ASSERT_EQ(m.streams.size(), 2U);
  EXPECT_EQ(m.streams[0].label, "1");
  // The SDP labels (a_leg/b_leg) are not those of the metadata (1/2), and nothing sends.
  EXPECT_EQ(m.sender_of_label("a_leg"), nullptr);
  EXPECT_EQ(m.sender_of_label("1"), nullptr);
  EXPECT_EQ(caller_aor(m), "sip:6001@localhost");
  RsMetadata merged = m;
  merge_rs_metadata(merged, parse_ok(docs[1]));
  EXPECT_EQ(merged, m);
}

// ---------------------------------------------------------------- documents written here

// Shaped like the complete snapshot of RFC 7865 section 6 (ids as base64, attributes
// session_id/participant_id/stream_id, associations as their own elements, extension data).
constexpr std::string_view kRfcComplete = R"(<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns='urn:ietf:params:xml:ns:recording:1'>
  <datamode>complete</datamode>
  <group group_id="7+OTCyoxTmqmqyA/1weDAg==">
    <associate-time>2010-12-16T23:41:07Z</associate-time>
    <mydata xmlns='http://example.com/my'><structure>structure!</structure></mydata>
  </group>
  <session session_id="hVpd7YQgRW2nD22h7q60JQ==">
    <sipSessionID>ab30317f1a784dc48ff824d0d3715d86;remote=47755a9de7794ba387653f2099600ef2</sipSessionID>
    <group-ref>7+OTCyoxTmqmqyA/1weDAg==</group-ref>
  </session>
  <participant participant_id="srfBElmCRp2QB23b7Mpk0w==">
    <nameID aor="sip:bob@biloxi.com">
      <name xml:lang="it">Bob</name>
    </nameID>
  </participant>
  <participant participant_id="zSfPoSvdSDCmU3A3TRDxAw==">
    <nameID aor="sip:alice@atlanta.com">
      <name xml:lang="en">Alice</name>
    </nameID>
  </participant>
  <stream stream_id="UAAMm5GRQKSCMVvLyl4rFw==" session_id="hVpd7YQgRW2nD22h7q60JQ==">
    <label>96</label>
  </stream>
  <stream stream_id="i1Pz3to5hGk8fuXl+PbwCw==" session_id="hVpd7YQgRW2nD22h7q60JQ==">
    <label>97</label>
  </stream>
  <sessionrecordingassoc session_id="hVpd7YQgRW2nD22h7q60JQ==">
    <associate-time>2010-12-16T23:41:07Z</associate-time>
  </sessionrecordingassoc>
  <participantsessionassoc participant_id="srfBElmCRp2QB23b7Mpk0w==" session_id="hVpd7YQgRW2nD22h7q60JQ==">
    <associate-time>2010-12-16T23:41:07Z</associate-time>
  </participantsessionassoc>
  <participantstreamassoc participant_id="zSfPoSvdSDCmU3A3TRDxAw==">
    <send>i1Pz3to5hGk8fuXl+PbwCw==</send>
    <recv>UAAMm5GRQKSCMVvLyl4rFw==</recv>
  </participantstreamassoc>
  <participantstreamassoc participant_id="srfBElmCRp2QB23b7Mpk0w==">
    <send>UAAMm5GRQKSCMVvLyl4rFw==</send>
    <recv>i1Pz3to5hGk8fuXl+PbwCw==</recv>
  </participantstreamassoc>
</recording>
)";

TEST(RsMetadata, RfcCompleteSnapshot) {
  const RsMetadata m = parse_ok(kRfcComplete);
  EXPECT_EQ(m.data_mode, "complete");
  EXPECT_EQ(m.group_id, "7+OTCyoxTmqmqyA/1weDAg==");
  EXPECT_EQ(m.session_id, "hVpd7YQgRW2nD22h7q60JQ==");
  EXPECT_EQ(m.recorded_call_id, "ab30317f1a784dc48ff824d0d3715d86;remote=47755a9de7794ba387653f2099600ef2");
  ASSERT_EQ(m.participants.size(), 2U);
  EXPECT_EQ(m.participants[0].id, "srfBElmCRp2QB23b7Mpk0w==");
  EXPECT_EQ(m.participants[0].name, "Bob");
  EXPECT_EQ(m.participants[0].aor, "sip:bob@biloxi.com");
  EXPECT_EQ(m.participants[0].send, Strings{"UAAMm5GRQKSCMVvLyl4rFw=="});
  EXPECT_EQ(m.participants[0].recv, Strings{"i1Pz3to5hGk8fuXl+PbwCw=="});
  EXPECT_EQ(m.participants[1].name, "Alice");
  EXPECT_EQ(m.participants[1].send, Strings{"i1Pz3to5hGk8fuXl+PbwCw=="});
  ASSERT_EQ(m.streams.size(), 2U);
  EXPECT_EQ(m.streams[0].id, "UAAMm5GRQKSCMVvLyl4rFw==");
  EXPECT_EQ(m.streams[0].label, "96");
  EXPECT_EQ(sender_aor(m, "96"), "sip:bob@biloxi.com");
  EXPECT_EQ(sender_aor(m, " 97 "), "sip:alice@atlanta.com");
  EXPECT_EQ(m.sender_of_label("98"), nullptr);
  EXPECT_EQ(m.sender_of_label(""), nullptr);
  EXPECT_EQ(caller_aor(m), "sip:bob@biloxi.com");  // no hint: the first in document order that sends
}

TEST(RsMetadata, PartialUpdateMergesById) {
  RsMetadata m = parse_ok(kRfcComplete);
  // A partial update: Alice's streams change, Carol joins with a new stream, Bob is not named.
  const RsMetadata up = parse_ok(R"(<recording xmlns='urn:ietf:params:xml:ns:recording:1'>
  <dataMode>Partial</dataMode>
  <participant participant_id="Y2Fyb2w=">
    <nameID aor="sip:carol@chicago.com"><name>Carol</name></nameID>
  </participant>
  <stream stream_id="8zc6e0lYTlWIINA6GR+3ag=="><label>98</label></stream>
  <stream stream_id="i1Pz3to5hGk8fuXl+PbwCw=="><label>99</label></stream>
  <participantstreamassoc participant_id="Y2Fyb2w="><send>8zc6e0lYTlWIINA6GR+3ag==</send></participantstreamassoc>
  <participantstreamassoc participant_id="zSfPoSvdSDCmU3A3TRDxAw==">
    <recv>8zc6e0lYTlWIINA6GR+3ag==</recv>
  </participantstreamassoc>
</recording>)");
  EXPECT_EQ(up.data_mode, "partial");
  ASSERT_EQ(up.participants.size(), 2U);  // Carol, and Alice from her association alone
  EXPECT_EQ(up.participants[1].id, "zSfPoSvdSDCmU3A3TRDxAw==");
  EXPECT_EQ(up.participants[1].aor, "");

  merge_rs_metadata(m, up);
  EXPECT_EQ(m.data_mode, "complete");
  EXPECT_EQ(m.session_id, "hVpd7YQgRW2nD22h7q60JQ==");  // kept: the update has none
  ASSERT_EQ(m.participants.size(), 3U);
  EXPECT_EQ(m.participants[0].send, Strings{"UAAMm5GRQKSCMVvLyl4rFw=="});  // Bob untouched
  EXPECT_EQ(m.participants[1].aor, "sip:alice@atlanta.com");               // kept
  EXPECT_EQ(m.participants[1].name, "Alice");
  EXPECT_TRUE(m.participants[1].send.empty());  // lists replaced: she sends nothing now
  EXPECT_EQ(m.participants[1].recv, Strings{"8zc6e0lYTlWIINA6GR+3ag=="});
  EXPECT_EQ(m.participants[2].aor, "sip:carol@chicago.com");
  ASSERT_EQ(m.streams.size(), 3U);
  EXPECT_EQ(m.streams[1].label, "99");  // relabelled
  EXPECT_EQ(sender_aor(m, "98"), "sip:carol@chicago.com");
  EXPECT_EQ(m.sender_of_label("99"), nullptr);
  EXPECT_EQ(caller_aor(m), "sip:bob@biloxi.com");

  // Merging the same update again changes nothing.
  const RsMetadata once = m;
  merge_rs_metadata(m, up);
  EXPECT_EQ(m, once);

  // A complete document replaces everything.
  merge_rs_metadata(m, parse_ok(kRfcComplete));
  EXPECT_EQ(m, parse_ok(kRfcComplete));
  // Absent dataMode counts as complete.
  merge_rs_metadata(m, parse_ok("<recording><participant id='x'/></recording>"));
  ASSERT_EQ(m.participants.size(), 1U);
  EXPECT_EQ(m.participants[0].id, "x");
}

TEST(RsMetadata, PartialWithoutStreamsKeepsThem) {
  RsMetadata m = parse_ok(kRfcComplete);
  merge_rs_metadata(m, parse_ok(R"(<recording><datamode>partial</datamode>
    <participant participant_id="srfBElmCRp2QB23b7Mpk0w=="><nameID><name>Robert</name></nameID></participant>
  </recording>)"));
  ASSERT_EQ(m.participants.size(), 2U);
  EXPECT_EQ(m.participants[0].name, "Robert");
  EXPECT_EQ(m.participants[0].aor, "sip:bob@biloxi.com");
  EXPECT_EQ(m.participants[0].send, Strings{"UAAMm5GRQKSCMVvLyl4rFw=="});
}

TEST(RsMetadata, PrefixesAndCase) {
  const RsMetadata m = parse_ok(R"(<?xml version="1.0"?>
<tns:recording xmlns:tns="urn:ietf:params:xml:ns:recording:1" xmlns:v="http://vendor.example/x">
  <tns:DataMode> COMPLETE </tns:DataMode>
  <tns:session tns:session_id="c2Vzcw=="><tns:sipSessionID>abc@host</tns:sipSessionID></tns:session>
  <tns:participant participant_id="cDE="><tns:nameID aor="sip:1000@pbx"><tns:name>One</tns:name></tns:nameID>
    <v:extra><v:role>called</v:role></v:extra></tns:participant>
  <tns:participant participant_id="cDI="><tns:nameid aor="1001@pbx"/></tns:participant>
  <tns:stream stream_id="czE="><tns:label>1</tns:label></tns:stream>
  <tns:stream stream_id="czI="><tns:label>2</tns:label></tns:stream>
  <tns:participantStreamAssoc participant_id="cDE="><tns:send>czE=</tns:send></tns:participantStreamAssoc>
  <tns:participantstreamassoc participant_id="cDI="><tns:send>czI=</tns:send></tns:participantstreamassoc>
</tns:recording>)");
  EXPECT_EQ(m.data_mode, "complete");
  EXPECT_EQ(m.session_id, "c2Vzcw==");
  EXPECT_EQ(m.recorded_call_id, "abc@host");
  ASSERT_EQ(m.participants.size(), 2U);
  EXPECT_EQ(m.participants[0].name, "One");
  EXPECT_EQ(m.participants[0].caller_hint, -1);
  EXPECT_EQ(m.participants[1].aor, "1001@pbx");
  EXPECT_EQ(sender_aor(m, "1"), "sip:1000@pbx");
  EXPECT_EQ(sender_aor(m, "2"), "1001@pbx");
  EXPECT_EQ(caller_aor(m), "1001@pbx");  // the other of two when one is the called party
}

TEST(RsMetadata, NoNamespaceDraftForm) {
  // Draft-era / Acme-like: id attributes, send inside the participant, no namespace at all.
  const RsMetadata m = parse_ok(R"(<recording>
  <datamode>complete</datamode>
  <session id="s1"/>
  <participant id="a"><nameID aor="sip:a@x"/><send>st-a</send><recv>st-b</recv></participant>
  <participant id="b"><nameID aor="sip:b@x"/><send>st-b</send>
    <extensiondata xmlns:apkt="http://acmepacket.com/siprec/extensiondata"><apkt:callerOrig>true</apkt:callerOrig></extensiondata>
  </participant>
  <stream id="st-a"><label>10</label></stream>
  <stream id="st-b"><label>20</label></stream>
</recording>)");
  EXPECT_EQ(m.session_id, "s1");
  ASSERT_EQ(m.participants.size(), 2U);
  EXPECT_EQ(m.participants[1].caller_hint, 1);
  EXPECT_EQ(sender_aor(m, "20"), "sip:b@x");
  EXPECT_EQ(caller_aor(m), "sip:b@x");
  // A root in the draft namespace or a vendor's own is accepted alike.
  EXPECT_EQ(parse_ok(R"(<recording xmlns="urn:ietf:params:xml:ns:recording"><session id="s"/></recording>)").session_id, "s");
  EXPECT_EQ(parse_ok(R"(<recording xmlns="urn:vendor:rec"><session id="s"/></recording>)").session_id, "s");
}

TEST(RsMetadata, BroadWorksDraftForm) {
  const RsMetadata m = parse_ok(R"(<recording_metadata xmlns="urn:ietf:params:xml:ns:siprec">
  <dataMode>complete</dataMode>
  <recording id="urn:uuid:r"><requestor>SRC</requestor></recording>
  <session id="urn:uuid:s"/>
  <participant id="urn:uuid:p1"><aor>sip:5551234567@example.com</aor><send><id>urn:uuid:st</id></send></participant>
  <participant id="urn:uuid:p2"><aor>sip:+15557654321@example.com;user=phone</aor></participant>
  <stream id="urn:uuid:st"><label>1</label><mode>mixed</mode></stream>
  <extensiondata><broadWorksRecordingMetadata xmlns="http://schema.broadsoft.com/broadworksCallRecording">
    <callID>callhalf-42:0</callID>
    <callType><origCall><callingPartyNumber>tel:+1-555-123-4567</callingPartyNumber>
    <calledPartyNumber>sip:+15557654321@example.com</calledPartyNumber></origCall></callType>
  </broadWorksRecordingMetadata></extensiondata>
</recording_metadata>)");
  EXPECT_EQ(m.session_id, "urn:uuid:s");
  EXPECT_EQ(m.recorded_call_id, "callhalf-42:0");
  ASSERT_EQ(m.participants.size(), 2U);
  EXPECT_EQ(m.participants[0].caller_hint, 1);   // 5551234567 ends +1-555-123-4567
  EXPECT_EQ(m.participants[1].caller_hint, -1);
  EXPECT_EQ(sender_aor(m, "1"), "sip:5551234567@example.com");
  EXPECT_EQ(caller_aor(m), "sip:5551234567@example.com");
}

TEST(RsMetadata, NamesWithEscapes) {
  const RsMetadata m = parse_ok(
      "<recording><participant participant_id=' p&amp;1 '>"
      "<nameID aor='sip:o&apos;brien@example.com'><name> O&apos;Brien &amp; Sons &lt;Sales&gt; &#x263A;&#33; </name>"
      "</nameID></participant>"
      "<participant participant_id='p2'><nameID><name><![CDATA[ <raw> & ]]></name></nameID></participant>"
      "<participant participant_id='p3'><nameID><name>&unknown;</name></nameID></participant></recording>");
  ASSERT_EQ(m.participants.size(), 3U);
  EXPECT_EQ(m.participants[0].id, "p&1");
  EXPECT_EQ(m.participants[0].aor, "sip:o'brien@example.com");
  EXPECT_EQ(m.participants[0].name, "O'Brien & Sons <Sales> \xE2\x98\xBA!");
  EXPECT_EQ(m.participants[1].name, "<raw> &");
  EXPECT_EQ(m.participants[2].name, "&unknown;");  // an undeclared entity is never expanded
}

TEST(RsMetadata, DoctypeRefused) {
  // The billion laughs: refused before any parser sees it.
  std::string bomb = "<?xml version='1.0'?>\n<!DOCTYPE recording [\n<!ENTITY l0 'lol'>\n";
  for (int i = 1; i < 10; ++i) {
    bomb += "<!ENTITY l" + std::to_string(i) + " '";
    for (int j = 0; j < 10; ++j) bomb += "&l" + std::to_string(i - 1) + ";";
    bomb += "'>\n";
  }
  bomb += "]>\n<recording><participant id='a'><nameID><name>&l9;</name></nameID></participant></recording>";
  EXPECT_EQ(parse_err(bomb), MetadataError::kDoctype);
  // XXE: an external entity.
  EXPECT_EQ(parse_err("<?xml version='1.0'?><!DOCTYPE r [<!ENTITY xxe SYSTEM 'file:///etc/passwd'>]>"
                      "<recording><session id='&xxe;'/></recording>"),
            MetadataError::kDoctype);
  EXPECT_EQ(parse_err("<!doctype recording SYSTEM 'http://evil.example/r.dtd'><recording/>"), MetadataError::kDoctype);
  EXPECT_EQ(parse_err("<recording><!ENTITY x 'y'></recording>"), MetadataError::kDoctype);
  // Without a declaration, the reference stays text.
  EXPECT_EQ(parse_ok("<recording><session id='&xxe;'/></recording>").session_id, "&xxe;");
}

TEST(RsMetadata, TruncatedIsMalformed) {
  const std::size_t end = kRfcComplete.rfind("</recording>") + std::string_view("</recording>").size();
  for (std::size_t n = 0; n < end; ++n) {
    RsMetadata m;
    EXPECT_EQ(parse_rs_metadata(kRfcComplete.substr(0, n), m), MetadataError::kMalformed) << "first " << n << " bytes";
  }
  EXPECT_EQ(parse_err("<recording><participant id='a'></recording>"), MetadataError::kMalformed);
  EXPECT_EQ(parse_err("<recording></Recording>"), MetadataError::kMalformed);
  EXPECT_EQ(parse_err(std::string_view("<recording>\0</recording>", 24)), MetadataError::kMalformed);
  EXPECT_EQ(parse_err("not xml at all"), MetadataError::kMalformed);
}

TEST(RsMetadata, NotRecording) {
  EXPECT_EQ(parse_err("<html><body/></html>"), MetadataError::kNotRecording);
  EXPECT_EQ(parse_err("<recordings/>"), MetadataError::kNotRecording);
  EXPECT_EQ(parse_err("<x:recording xmlns:x='urn:ietf:params:xml:ns:recording:1'/>"), MetadataError::kOk);
}

TEST(RsMetadata, SizeBound) {
  const std::string head = "<recording><session id='s'/>";
  const std::string tail = "</recording>";
  std::string doc = head + std::string(kMaxMetadataBytes - head.size() - tail.size(), ' ') + tail;
  ASSERT_EQ(doc.size(), kMaxMetadataBytes);
  EXPECT_EQ(parse_ok(doc).session_id, "s");
  doc.insert(head.size(), " ");
  EXPECT_EQ(parse_err(doc), MetadataError::kTooLarge);
}

std::string many_participants(std::size_t n) {
  std::string doc = "<recording>";
  for (std::size_t i = 0; i < n; ++i) doc += "<participant participant_id='p" + std::to_string(i) + "'/>";
  return doc + "</recording>";
}

TEST(RsMetadata, CountBounds) {
  EXPECT_EQ(parse_ok(many_participants(kMaxParticipants)).participants.size(), kMaxParticipants);
  EXPECT_EQ(parse_err(many_participants(kMaxParticipants + 1)), MetadataError::kTooMany);
  EXPECT_EQ(parse_err(many_participants(1000)), MetadataError::kTooMany);
  // The same id twice is one participant.
  EXPECT_EQ(parse_ok("<recording><participant id='a'/><participant id='a'><send>s</send></participant></recording>")
                .participants.size(),
            1U);

  std::string streams = "<recording>";
  for (std::size_t i = 0; i <= kMaxStreams; ++i) streams += "<stream stream_id='s" + std::to_string(i) + "'/>";
  EXPECT_EQ(parse_err(streams + "</recording>"), MetadataError::kTooMany);

  std::string sends = "<recording><participant id='a'>";
  for (std::size_t i = 0; i <= kMaxStreams; ++i) sends += "<send>s" + std::to_string(i) + "</send>";
  EXPECT_EQ(parse_err(sends + "</participant></recording>"), MetadataError::kTooMany);

  // Associations naming participants the document does not declare create them, within bounds.
  std::string assocs = "<recording>";
  for (std::size_t i = 0; i <= kMaxParticipants; ++i)
    assocs += "<participantstreamassoc participant_id='q" + std::to_string(i) + "'/>";
  EXPECT_EQ(parse_err(assocs + "</recording>"), MetadataError::kTooMany);
}

TEST(RsMetadata, DeepNestingDoesNotCrash) {
  std::string doc = "<recording><participant id='a'>";
  for (int i = 0; i < 8000; ++i) doc += "<x>";
  doc += "<role>calling</role>";
  for (int i = 0; i < 8000; ++i) doc += "</x>";
  doc += "</participant></recording>";
  ASSERT_LE(doc.size(), kMaxMetadataBytes);
  const RsMetadata m = parse_ok(doc);
  ASSERT_EQ(m.participants.size(), 1U);
  EXPECT_EQ(m.participants[0].caller_hint, 0);  // below the searched depth
}

TEST(RsMetadata, CallerRules) {
  RsMetadata m;
  EXPECT_EQ(m.caller(), nullptr);
  m.participants.resize(2);
  m.participants[0].id = "a";
  m.participants[1].id = "b";
  EXPECT_EQ(m.caller(), &m.participants[0]);  // nothing known: the first
  m.participants[1].send = {"s"};
  EXPECT_EQ(m.caller(), &m.participants[1]);  // the first that sends
  m.participants[1].caller_hint = -1;
  EXPECT_EQ(m.caller(), &m.participants[0]);  // the other of two
  m.participants.emplace_back();
  EXPECT_EQ(m.caller(), &m.participants[1]);  // three: the -1 rule does not apply
  m.participants[2].caller_hint = 1;
  EXPECT_EQ(m.caller(), &m.participants[2]);
}

TEST(RsMetadata, ErrorNames) {
  EXPECT_STREQ(metadata_error_name(MetadataError::kOk), "ok");
  EXPECT_STREQ(metadata_error_name(MetadataError::kDoctype), "doctype");
  EXPECT_STREQ(metadata_error_name(MetadataError::kTooMany), "too_many");
}

}  // namespace
}  // namespace callrec::control::sip
