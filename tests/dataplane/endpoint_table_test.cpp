// The span lane's flat endpoint table against std::map as the model, through inserts,
// overwrites and erases (tombstones, rebuilds), IPv4 and IPv6 keys.
#include <gtest/gtest.h>

#include <map>
#include <random>

#include "dataplane/span/endpoint_table.hpp"

namespace callrec::dataplane {
namespace {

decode::Endpoint ep(std::uint8_t family, std::uint32_t a, std::uint16_t port) {
  decode::Endpoint e;
  e.addr.family = family;
  for (int i = 0; i < 4; ++i) e.addr.b[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(a >> (24 - 8 * i));
  if (family == 6) e.addr.b[15] = 1;
  e.port = port;
  return e;
}

TEST(EndpointTable, FamilyAndPortAreKeyParts) {
  EndpointTable<int> t;
  t.set(ep(4, 0x0A000001, 4000), 1);
  t.set(ep(6, 0x0A000001, 4000), 2);
  t.set(ep(4, 0x0A000001, 4001), 3);
  EXPECT_EQ(t.size(), 3u);
  EXPECT_EQ(*t.find(ep(4, 0x0A000001, 4000)), 1);
  EXPECT_EQ(*t.find(ep(6, 0x0A000001, 4000)), 2);
  EXPECT_EQ(*t.find(ep(4, 0x0A000001, 4001)), 3);
  EXPECT_EQ(t.find(ep(4, 0x0A000002, 4000)), nullptr);
  t.set(ep(4, 0x0A000001, 4000), 7);  // overwrite: newest wins
  EXPECT_EQ(t.size(), 3u);
  EXPECT_EQ(*t.find(ep(4, 0x0A000001, 4000)), 7);
  t.erase(ep(6, 0x0A000001, 4000));
  EXPECT_EQ(t.find(ep(6, 0x0A000001, 4000)), nullptr);
  EXPECT_EQ(*t.find(ep(4, 0x0A000001, 4001)), 3) << "an erase keeps the probe chains of the others";
  t.erase(ep(6, 0x0A000001, 4000));  // absent: nothing happens
  EXPECT_EQ(t.size(), 2u);
}

TEST(EndpointTable, MatchesAModelThroughChurn) {
  EndpointTable<std::uint32_t> t;
  std::map<std::tuple<int, std::uint32_t, int>, std::uint32_t> model;
  std::mt19937 rng(7);
  for (int round = 0; round < 200000; ++round) {
    const auto fam = static_cast<std::uint8_t>(rng() % 4 == 0 ? 6 : 4);
    const std::uint32_t a = 0x0A000000 + rng() % 3000;
    const auto port = static_cast<std::uint16_t>(10000 + 2 * (rng() % 8));
    const decode::Endpoint k = ep(fam, a, port);
    const auto mk = std::make_tuple(int{fam}, a, int{port});
    if (rng() % 3 == 0) {
      t.erase(k);
      model.erase(mk);
    } else {
      const auto v = static_cast<std::uint32_t>(rng());
      t.set(k, v);
      model[mk] = v;
    }
    if (round % 997 == 0) {
      ASSERT_EQ(t.size(), model.size());
      for (const auto& [key, v] : model) {
        const std::uint32_t* got = t.find(ep(static_cast<std::uint8_t>(std::get<0>(key)), std::get<1>(key),
                                             static_cast<std::uint16_t>(std::get<2>(key))));
        ASSERT_NE(got, nullptr);
        ASSERT_EQ(*got, v);
      }
    }
  }
  for (const auto& [key, v] : model)
    t.erase(ep(static_cast<std::uint8_t>(std::get<0>(key)), std::get<1>(key), static_cast<std::uint16_t>(std::get<2>(key))));
  EXPECT_TRUE(t.empty());
}

}  // namespace
}  // namespace callrec::dataplane
