#pragma once
// The DPDK include block: the one place that includes rte_*.h, for the DPDK source
// (dataplane/dpdk/) and the DPDK mirror capture (dataplane/capture/dpdk_capture.cpp). The pragmas
// keep the project's warnings (C casts, pedantic extensions, shadowed and unused names) off DPDK's
// own headers, and only there.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpedantic"
#pragma GCC diagnostic ignored "-Wold-style-cast"
#pragma GCC diagnostic ignored "-Wcast-align"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include <rte_common.h>
#include <rte_cycles.h>
#include <rte_dev.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_hash.h>
#include <rte_hash_crc.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_pause.h>
#include <rte_prefetch.h>
#include <rte_ring.h>
#include <rte_ring_elem.h>
#include <rte_telemetry.h>
#pragma GCC diagnostic pop
