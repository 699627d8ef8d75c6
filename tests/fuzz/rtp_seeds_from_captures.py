#!/usr/bin/env python3
"""Seeds for rtp_path_fuzz from real captures (../shared/testdata/captures, third-party: the
seeds are made at fuzz time into a scratch corpus, never committed).

Reads classic pcap and pcapng (Ethernet, 802.1Q, Linux cooked SLL/SLL2, raw IP; IPv4/IPv6, UDP,
unfragmented), groups the datagrams that look like RTP v2 by (source, destination, SSRC), and
writes one fuzz input per stream in rtp_path_fuzz's format: two option bytes (the daemon's
defaults: reorder window 8, gap fill 48, 4-packet format confirmation, segment burst 4), then
one raw-datagram record per packet with its real arrival delta (datagrams over 255 bytes are cut:
the target's length byte; the cut ones exercise the invalid paths).

usage: rtp_seeds_from_captures.py CAPTURE_DIR OUT_DIR
"""
import os
import struct
import sys

OPTIONS = bytes([0xC7, 0x3D])
MAX_PACKETS = 2000  # per stream: keeps each seed under ~0.5 MB


def pcap_packets(data):
    """(time_s, linktype, frame) of a classic pcap or a pcapng."""
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        le = magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1")
        nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
        e = "<" if le else ">"
        linktype = struct.unpack(e + "I", data[20:24])[0] & 0x0FFFFFFF
        off = 24
        while off + 16 <= len(data):
            sec, frac, incl, _ = struct.unpack(e + "IIII", data[off:off + 16])
            off += 16
            yield sec + frac / (1e9 if nano else 1e6), linktype, data[off:off + incl]
            off += incl
        return
    if magic != b"\x0a\x0d\x0d\x0a":
        return
    e = "<"
    links = []
    off = 0
    while off + 12 <= len(data):
        btype = struct.unpack(e + "I", data[off:off + 4])[0]
        if btype == 0x0A0D0D0A:
            bom = data[off + 8:off + 12]
            e = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
            links = []
        blen = struct.unpack(e + "I", data[off + 4:off + 8])[0]
        if blen < 12:
            return
        body = data[off + 8:off + blen - 4]
        if btype == 1:  # interface description
            links.append(struct.unpack(e + "H", body[:2])[0])
        elif btype == 6 and len(body) >= 20:  # enhanced packet
            iface, hi, lo, cap, _ = struct.unpack(e + "IIIII", body[:20])
            lt = links[iface] if iface < len(links) else 1
            yield ((hi << 32) | lo) / 1e6, lt, body[20:20 + cap]
        off += blen


def udp_of(linktype, f):
    """(src, dst, payload) of an unfragmented UDP datagram, else None."""
    if linktype == 1:  # Ethernet
        if len(f) < 14:
            return None
        et, off = struct.unpack(">H", f[12:14])[0], 14
        while et in (0x8100, 0x88A8) and len(f) >= off + 4:
            et, off = struct.unpack(">H", f[off + 2:off + 4])[0], off + 4
    elif linktype == 113:  # SLL
        if len(f) < 16:
            return None
        et, off = struct.unpack(">H", f[14:16])[0], 16
    elif linktype == 276:  # SLL2
        if len(f) < 20:
            return None
        et, off = struct.unpack(">H", f[0:2])[0], 20
    elif linktype in (101, 12, 228, 229):  # raw IP
        et = 0x0800 if f and f[0] >> 4 == 4 else 0x86DD
        off = 0
    else:
        return None
    ip = f[off:]
    if et == 0x0800 and len(ip) >= 20 and ip[9] == 17:
        ihl = (ip[0] & 15) * 4
        if struct.unpack(">H", ip[6:8])[0] & 0x3FFF:
            return None  # a fragment
        udp = ip[ihl:]
        src, dst = ip[12:16], ip[16:20]
    elif et == 0x86DD and len(ip) >= 40 and ip[6] == 17:
        udp = ip[40:]
        src, dst = ip[8:24], ip[24:40]
    else:
        return None
    if len(udp) < 8:
        return None
    sp, dp, ulen = struct.unpack(">HHH", udp[:6])
    return (src, sp), (dst, dp), udp[8:ulen] if ulen >= 8 else udp[8:]


def looks_rtp(p):
    return len(p) >= 12 and p[0] >> 6 == 2 and (p[1] & 0x7F) not in range(72, 77)  # not RTCP


def main():
    src_dir, out_dir = sys.argv[1], sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    made = 0
    for name in sorted(os.listdir(src_dir)):
        try:
            data = open(os.path.join(src_dir, name), "rb").read()
        except OSError:
            continue
        streams = {}
        for t, lt, frame in pcap_packets(data):
            u = udp_of(lt, frame)
            if not u or not looks_rtp(u[2]):
                continue
            key = (u[0], u[1], u[2][8:12])
            streams.setdefault(key, []).append((t, u[2]))
        for i, pkts in enumerate(v for v in streams.values() if len(v) >= 10):
            out = bytearray(OPTIONS)
            prev = pkts[0][0]
            for t, p in pkts[:MAX_PACKETS]:
                ms = max(0, round((t - prev) * 1000))
                prev = t
                out.append(ms if ms < 64 else 0x40 | min(63, round(ms / 16)))
                p = p[:255]
                out.append(len(p))
                out += p
            with open(os.path.join(out_dir, f"{name}.{i}"), "wb") as f:
                f.write(out)
            made += 1
    print(f"{made} RTP stream seed(s) from {src_dir}")


if __name__ == "__main__":
    main()
