#!/usr/bin/env python3
"""Throughput and memory benchmark: ``pcapsense analyze`` against ``tshark -q -z conv,tcp``.

    python benchmarks/bench_analyze.py                      # 2,000,000 packets (~1.7 GB capture)
    python benchmarks/bench_analyze.py --packets 200000     # quick run
    python benchmarks/bench_analyze.py --flat-check         # also run pcapsense on N/4 packets

The capture is synthetic and fully deterministic (fixed seed, fixed base timestamp): a classic little-endian
microsecond pcap on Ethernet, dominated by full-size TCP segments of many concurrent connections, with DNS,
ARP and half-open SYNs mixed in.  ``write_benchmark_capture`` is importable so tests can build a small one.

Each tool runs as a whole process, once per measurement, the tools taking turns (pcapsense, tshark, pcapsense,
tshark, ...) so that a change in machine load hits both alike. Timed runs are left alone: wall time comes from
the parent, CPU time and peak memory from the tool's own ``wait4`` rusage (kernel ``ru_maxrss``: the largest
single process among the tool and the descendants it reaped). Nothing samples a timed run, because reading
``/proc/PID/smaps_rollup`` walks the page tables under the process's memory lock: sampled every 20 ms it made
tshark (2.8 GB resident) take 38 s instead of 14 s.

pcapsense reads and decodes large captures in a forked read-ahead child that shares pages with its parent
(copy-on-write and a shared batch mapping), so neither ru_maxrss nor a sum of RSS tells its footprint. It
therefore gets one more, untimed, run in which the whole process tree is sampled every 20 ms and summed in PSS
(proportional set size, each shared page split among its sharers); the reported peak is the larger of that sum
and ru_maxrss. The RSS sum is recorded alongside, as an upper bound. A single-process tool (tshark) needs no
such run: its ru_maxrss is its peak.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

GENERATOR_VERSION = 1
BASE_TS_US = 1_700_000_000 * 1_000_000  # 2023-11-14T22:13:20Z, fixed: no wall clock in the capture
SNAPLEN = 262_144
ROW = 16 + 1514  # one pcap record header + the largest Ethernet frame we emit
CHUNK_ROWS = 1 << 15
TLS_RECORD = 5 + 16_401  # TLS 1.3 application-data record: 16 KiB + content type + 16-byte AEAD tag

# Packet kinds in the plan.
K_TCP, K_DNSQ, K_DNSR, K_ARPQ, K_ARPR = 0, 1, 2, 3, 4

# TCP option layouts: 0 none, 1 NOP NOP TS, 2 Linux SYN (MSS SACK_PERM TS NOP WS), 3 Windows SYN
# (MSS NOP WS NOP NOP SACK_PERM).
OPT_LEN = np.array([0, 12, 20, 12], dtype=np.int64)
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

GATEWAY_IP = 0x0A000001  # 10.0.0.1
RESOLVER_IP = 0x0A000035  # 10.0.0.53
GATEWAY_MAC = 0x001B213A4F01
RESOLVER_MAC = 0x001B213A4F35
CLIENT_OUI = 0x3C22FB000000
DEAD_SERVERS = np.array([0xCB0071FA, 0xCB0071FB, 0xCB0071FC], dtype=np.int64)  # 203.0.113.250-252
HERE = Path(__file__).resolve().parent

TARGET_SPEEDUP = 5.0
TARGET_RSS_MB = 300.0
TARGET_FLAT_GROWTH = 0.20  # peak RSS at N may exceed peak RSS at N/4 by at most 20 % (or 10 MB)
TARGET_FLAT_SLACK_MB = 10.0

DNS_LABELS = ["www", "api", "cdn", "static", "img", "login", "auth", "mail", "update", "telemetry",
              "assets", "media", "push", "edge", "graph", "accounts", "files", "sync", "ocsp", "time"]
DNS_DOMAINS = ["example.com", "example.net", "example.org", "svc.example.com", "corp.example",
               "video.example.net", "shop.example.org", "cloud.example.com"]


# ----------------------------------------------------------------------------------------------------------
# Plan: one row per packet, columns as numpy arrays; the pcap bytes are rendered from it in chunks.
# ----------------------------------------------------------------------------------------------------------


def _client_ip(c: np.ndarray) -> np.ndarray:
    """Client index -> 10.1.x.y (y in 2..251)."""
    c = np.asarray(c, dtype=np.int64)
    return 0x0A010000 + ((c // 250) << 8) + (c % 250) + 2


def _client_mac(ip: np.ndarray) -> np.ndarray:
    return CLIENT_OUI | (np.asarray(ip, dtype=np.int64) & 0xFFFFFF)


def _group_exclusive_cumsum(values: np.ndarray, group_first: np.ndarray, group_of: np.ndarray) -> np.ndarray:
    """Exclusive cumulative sum of values restarting at each group (rows of a group are contiguous)."""
    cs = np.cumsum(values) - values
    return cs - cs[group_first[group_of]]


def _dns_names() -> tuple[list[str], np.ndarray, np.ndarray]:
    names = [f"{lab}{i % 7 or ''}.{dom}" for i, (lab, dom) in
             enumerate((lab, dom) for dom in DNS_DOMAINS for lab in DNS_LABELS)]
    wires = []
    for name in names:
        w = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"
        wires.append(w)
    qlen = np.array([len(w) for w in wires], dtype=np.int64)
    width = 12 + int(qlen.max()) + 4 + 16
    table = np.zeros((len(names), width), dtype=np.uint8)
    for i, w in enumerate(wires):
        body = (b"\x00" * 4 + b"\x00\x01\x00\x00\x00\x00\x00\x00" + w + b"\x00\x01\x00\x01"
                + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x01\x2c\x00\x04")  # answer: A IN TTL 300 rdlen 4
        table[i, : len(body)] = np.frombuffer(body, dtype=np.uint8)
    return names, qlen, table


class _Cols:
    """Accumulates per-packet column arrays from several packet families."""

    names = ("t", "kind", "src_ip", "dst_ip", "sport", "dport", "eth_src", "eth_dst", "ttl", "seq", "ack",
             "flags", "plen", "opt", "win", "tsval", "tsecr", "aux", "caplen",
             "moff", "mlen")

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {k: [] for k in self.names}

    def add(self, n: int, **cols: np.ndarray | int) -> None:
        for k in self.names:
            v = cols.get(k, 0)
            self.parts[k].append(np.broadcast_to(np.asarray(v, dtype=np.int64), (n,)))

    def build(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate(v) for k, v in self.parts.items()}


def _plan(packets: int, seed: int, flows: int | None) -> tuple[dict[str, np.ndarray], dict]:
    n_total = int(packets)
    if n_total < 60:
        raise ValueError("the benchmark capture needs at least 60 packets")
    rng = np.random.default_rng(seed)
    n_arp_pairs = max(1, round(n_total * 0.0005))
    n_dns_pairs = max(1, round(n_total * 0.005))
    n_retx_target = round(n_total * 0.005)
    n_ooo_target = round(n_total * 0.001)
    n_half_target = max(1, round(n_total * 0.005))
    tcp_budget = n_total - 2 * n_arp_pairs - 2 * n_dns_pairs - n_retx_target - n_half_target
    n_flows = int(flows) if flows else max(1, round(n_total / 100))
    n_flows = max(1, min(n_flows, tcp_budget // 9))
    duration_us = max(1_000_000, n_total * 1_000_000 // 30_000)  # ~30k packets/s of capture time
    mean_think_us = max(20_000, duration_us // 40)

    # ---- exchanges: request -> k server segments, one client ACK per two segments
    ex_budget = tcp_budget - 6 * n_flows
    ks: list[np.ndarray] = []
    total = 0
    while total <= ex_budget:
        m = max(64, int(ex_budget / 12))
        big = rng.random(m) < 0.54
        k = np.where(big, rng.integers(8, 25, m), rng.integers(1, 6, m))
        ks.append(k)
        total += int((1 + k + (k + 1) // 2).sum())
    k = np.concatenate(ks)
    pe = 1 + k + (k + 1) // 2
    cum = np.cumsum(pe)
    n_ex = int(np.searchsorted(cum, ex_budget, side="right"))
    if n_ex == 0:
        k[0], pe[0], n_ex = 1, 3, 1
        cum = np.cumsum(pe)
    k, pe = k[:n_ex], pe[:n_ex]
    leftover = ex_budget - int(cum[n_ex - 1])
    if n_ex < n_flows:
        leftover += 6 * (n_flows - n_ex)
        n_flows = n_ex
    cuts = np.sort(rng.choice(np.arange(1, n_ex), n_flows - 1, replace=False)) if n_flows > 1 else []
    flow_first_ex = np.concatenate([[0], cuts]).astype(np.int64)
    ex_per_flow = np.diff(np.concatenate([flow_first_ex, [n_ex]]))
    ex_flow = np.repeat(np.arange(n_flows), ex_per_flow)

    # ---- per-flow attributes
    use_ts = rng.random(n_flows) < 0.8
    mss = np.where(use_ts, 1448, 1460).astype(np.int64)
    rtt = np.clip(np.exp(rng.normal(np.log(25_000), 0.8, n_flows)), 1_000, 300_000).astype(np.int64)
    gap = rng.integers(40, 400, n_flows)

    req_len = rng.integers(90, 900, n_ex)
    last_len = rng.integers(22, mss[ex_flow] + 1)
    resp = (k - 1) * mss[ex_flow] + last_len
    srv_off = _group_exclusive_cumsum(resp, flow_first_ex, ex_flow)
    req_off = _group_exclusive_cumsum(req_len, flow_first_ex, ex_flow)
    srv_delay = rng.integers(200, 20_000, n_ex)
    dur = rtt[ex_flow] + srv_delay + (k - 1) * gap[ex_flow] + 15
    think = 50_000 + rng.exponential(mean_think_us, n_ex).astype(np.int64)
    ex_rel = _group_exclusive_cumsum(dur + think, flow_first_ex, ex_flow)  # relative to first request
    flow_body = np.bincount(ex_flow, weights=dur + think, minlength=n_flows).astype(np.int64)
    flow_len = rtt + 30 + flow_body + rtt + 15
    start = (rng.random(n_flows) * np.maximum(duration_us - flow_len, duration_us // 10)).astype(np.int64)
    t_first_req = start + rtt + 30
    ex_t = t_first_req[ex_flow] + ex_rel
    c_bytes = np.bincount(ex_flow, weights=req_len, minlength=n_flows).astype(np.int64)
    s_bytes = np.bincount(ex_flow, weights=resp, minlength=n_flows).astype(np.int64)
    t_close = t_first_req + flow_body

    # ---- half-open attempts: 1-3 SYNs each (initial + retransmissions at +1 s, +3 s)
    half_pkts = n_half_target + leftover
    tries = rng.choice([1, 2, 3], size=half_pkts, p=[0.3, 0.2, 0.5])
    cum_tries = np.cumsum(tries)
    n_half = int(np.searchsorted(cum_tries, half_pkts, side="left")) + 1
    tries = tries[:n_half].copy()
    tries[-1] -= int(cum_tries[n_half - 1]) - half_pkts

    # ---- conversation table: full flows then half-open attempts
    n_conv = n_flows + n_half
    n_clients = int(min(max(1, n_conv // 10), 250 * 250))
    conv_client = rng.integers(0, n_clients, n_conv)
    order = np.argsort(conv_client, kind="stable")
    counts = np.bincount(conv_client, minlength=n_clients)
    first = np.cumsum(counts) - counts
    rank = np.empty(n_conv, dtype=np.int64)
    rank[order] = np.arange(n_conv) - first[conv_client[order]]
    port_base = rng.integers(0, max(1, 28_000 - int(counts.max())), n_clients)
    cport = 32_768 + (port_base[conv_client] + rank) % 28_232
    cip = _client_ip(conv_client)
    n_servers = 64
    server_ips = np.concatenate([0xC6336400 + 10 + np.arange(32), 0xCB007100 + 10 + np.arange(32)])
    server_hops = rng.integers(5, 20, n_servers)
    srv = rng.integers(0, n_servers, n_conv)
    sip = np.where(np.arange(n_conv) < n_flows, server_ips[srv], DEAD_SERVERS[srv % len(DEAD_SERVERS)])
    sport = rng.choice([443, 8443, 993], size=n_conv, p=[0.9, 0.07, 0.03])
    sttl = 64 - server_hops[srv]
    conv_ts = np.concatenate([use_ts, np.ones(n_half, dtype=bool)])
    conv_rtt = np.concatenate([rtt, np.full(n_half, 10_000)])
    isn_c = rng.integers(0, 1 << 32, n_conv, dtype=np.int64)
    isn_s = rng.integers(0, 1 << 32, n_conv, dtype=np.int64)
    tsoff_c = rng.integers(0, 1 << 32, n_conv, dtype=np.int64)
    tsoff_s = rng.integers(0, 1 << 32, n_conv, dtype=np.int64)

    cols = _Cols()
    m32 = (1 << 32) - 1

    def tcp(conv, direction, t, seq_rel, ack_rel, flags, plen, syn=None, moff=0, mlen=0):
        """Add TCP packets; seq/ack relative to ISN+1 of the sending/acknowledged side (SYN uses -1)."""
        n = len(conv)
        to_srv = direction == 0
        seq = np.where(to_srv, isn_c[conv], isn_s[conv]) + 1 + seq_rel
        ack = np.where(to_srv, isn_s[conv], isn_c[conv]) + 1 + ack_rel
        ts = conv_ts[conv]
        is_syn = (flags & SYN) != 0 if syn is None else syn
        opt = np.where(is_syn, np.where(ts, 2, 3), np.where(ts, 1, 0))
        win = np.where(is_syn, np.where(to_srv, 64_240, 65_160), np.where(to_srv, 502, 501))
        t_ms = t // 1000
        back_ms = (t - conv_rtt[conv]) // 1000
        tsval = np.where(to_srv, t_ms + tsoff_c[conv], t_ms + tsoff_s[conv]) & m32
        tsecr = np.where(to_srv, back_ms + tsoff_s[conv], back_ms + tsoff_c[conv]) & m32
        tsecr = np.where(to_srv & is_syn, 0, tsecr)
        client_mac = _client_mac(cip[conv])
        cols.add(
            n, t=t, kind=K_TCP,
            src_ip=np.where(to_srv, cip[conv], sip[conv]), dst_ip=np.where(to_srv, sip[conv], cip[conv]),
            sport=np.where(to_srv, cport[conv], sport[conv]),
            dport=np.where(to_srv, sport[conv], cport[conv]),
            eth_src=np.where(to_srv, client_mac, GATEWAY_MAC),
            eth_dst=np.where(to_srv, GATEWAY_MAC, client_mac),
            ttl=np.where(to_srv, 64, sttl[conv]), seq=seq & m32, ack=np.where(flags & ACK, ack & m32, 0),
            flags=flags, plen=plen, opt=opt, win=win, tsval=tsval, tsecr=tsecr,
            caplen=54 + OPT_LEN[opt] + plen, moff=moff, mlen=mlen,
        )

    fl = np.arange(n_flows)
    zero = np.zeros(n_flows, dtype=np.int64)
    c2s = np.zeros(n_flows, dtype=np.int64)
    s2c = np.ones(n_flows, dtype=np.int64)
    # handshake
    tcp(fl, c2s, start, zero - 1, zero - 1, np.full(n_flows, SYN), zero)
    tcp(fl, s2c, start + rtt, zero - 1, zero, np.full(n_flows, SYN | ACK), zero)
    tcp(fl, c2s, start + rtt + 15, zero, zero, np.full(n_flows, ACK), zero)
    # close: client FIN, server FIN, client ACK
    tcp(fl, c2s, t_close, c_bytes, s_bytes, np.full(n_flows, FIN | ACK), zero)
    tcp(fl, s2c, t_close + rtt, s_bytes, c_bytes + 1, np.full(n_flows, FIN | ACK), zero)
    tcp(fl, c2s, t_close + rtt + 15, c_bytes + 1, s_bytes + 1, np.full(n_flows, ACK), zero)

    # exchange packets
    n_xp = int(pe.sum())
    xe = np.repeat(np.arange(n_ex), pe)
    pos = np.arange(n_xp) - np.repeat(np.cumsum(pe) - pe, pe)
    q = pos - 1
    g, r = q // 3, q % 3
    s_idx = 2 * g + r
    ke = k[xe]
    is_req = pos == 0
    is_seg = ~is_req & (r < 2) & (s_idx < ke)
    is_ack = ~is_req & ~is_seg
    c_idx = np.minimum(2 * g + 1, ke - 1)
    xf = ex_flow[xe]
    xmss = mss[xf]
    srv_base = ex_t[xe] + rtt[xf] + srv_delay[xe]
    xt = np.where(is_req, ex_t[xe],
                  np.where(is_seg, srv_base + s_idx * gap[xf], srv_base + c_idx * gap[xf] + 15))
    req_end = req_off[xe] + req_len[xe]
    xseq = np.where(is_req, req_off[xe], np.where(is_seg, srv_off[xe] + s_idx * xmss, req_end))
    xack = np.where(is_req, srv_off[xe],
                    np.where(is_seg, req_end, srv_off[xe] + np.minimum((c_idx + 1) * xmss, resp[xe])))
    last_seg = is_seg & (s_idx == ke - 1)
    xplen = np.where(is_req, req_len[xe], np.where(is_seg, np.where(last_seg, last_len[xe], xmss), 0))
    xflags = np.where(is_req | last_seg, PSH | ACK, ACK)
    xdir = is_seg.astype(np.int64)

    # out-of-order: swap the arrival of two back-to-back full segments
    pair_first = np.flatnonzero(is_seg & (r == 0) & (s_idx + 1 < ke))
    n_ooo = min(n_ooo_target, len(pair_first))
    ooo = np.sort(rng.choice(pair_first, n_ooo, replace=False)) if n_ooo else np.zeros(0, dtype=np.int64)
    xt[ooo], xt[ooo + 1] = xt[ooo + 1].copy(), xt[ooo].copy()
    # TLS framing: each request is one record, each response a run of full-size records
    xmoff = np.where(is_seg, s_idx * xmss, 0)
    xmlen = np.where(is_req, req_len[xe], np.where(is_seg, resp[xe], 0))
    tcp(xf, xdir, xt, xseq, xack, xflags, xplen, moff=xmoff, mlen=xmlen)

    # retransmissions: a server segment sent again one RTT (at most 40 ms) later, before the next request
    seg_rows = np.flatnonzero(is_seg)
    n_retx = min(n_retx_target, len(seg_rows))
    rx = np.sort(rng.choice(seg_rows, n_retx, replace=False)) if n_retx else np.zeros(0, dtype=np.int64)
    rx_t = xt[rx] + np.minimum(rtt[xf[rx]], 40_000)
    tcp(xf[rx], xdir[rx], rx_t, xseq[rx], xack[rx], xflags[rx], xplen[rx], moff=xmoff[rx], mlen=xmlen[rx])

    # half-open SYNs
    hconv = n_flows + np.repeat(np.arange(n_half), tries)
    htry = np.arange(len(hconv)) - np.repeat(np.cumsum(tries) - tries, tries)
    h_start = rng.integers(0, duration_us, n_half)
    h_t = h_start[hconv - n_flows] + np.array([0, 1_000_000, 3_000_000])[htry] + htry * 1_000
    hz = np.zeros(len(hconv), dtype=np.int64)
    tcp(hconv, hz, h_t, hz - 1, hz - 1, np.full(len(hconv), SYN), hz)

    # DNS query/response pairs to the LAN resolver
    _, qlen, _ = _dns_names()
    n_names = len(qlen)
    d_client = rng.integers(0, n_clients, n_dns_pairs)
    d_ip = _client_ip(d_client)
    d_mac = _client_mac(d_ip)
    d_port = rng.integers(1024, 65536, n_dns_pairs)
    d_name = (n_names * rng.random(n_dns_pairs) ** 2).astype(np.int64)
    d_txid = rng.integers(0, 65536, n_dns_pairs)
    d_nx = rng.random(n_dns_pairs) < 0.05
    d_ans = server_ips[rng.integers(0, n_servers, n_dns_pairs)]
    d_t = rng.integers(0, duration_us, n_dns_pairs)
    q_cap = 14 + 20 + 8 + 12 + qlen[d_name] + 4
    cols.add(n_dns_pairs, t=d_t, kind=K_DNSQ, src_ip=d_ip, dst_ip=RESOLVER_IP, sport=d_port, dport=53,
             eth_src=d_mac, eth_dst=RESOLVER_MAC, ttl=64, seq=d_txid, ack=d_ans, flags=d_nx, aux=d_name,
             caplen=q_cap)
    cols.add(n_dns_pairs, t=d_t + rng.integers(400, 40_000, n_dns_pairs), kind=K_DNSR, src_ip=RESOLVER_IP,
             dst_ip=d_ip, sport=53, dport=d_port, eth_src=RESOLVER_MAC, eth_dst=d_mac, ttl=64, seq=d_txid,
             ack=d_ans, flags=d_nx, aux=d_name, caplen=q_cap + np.where(d_nx, 0, 16))

    # ARP: who-has the gateway, and its reply
    a_ip = _client_ip(rng.integers(0, n_clients, n_arp_pairs))
    a_mac = _client_mac(a_ip)
    a_t = rng.integers(0, duration_us, n_arp_pairs)
    cols.add(n_arp_pairs, t=a_t, kind=K_ARPQ, src_ip=a_ip, dst_ip=GATEWAY_IP, eth_src=a_mac,
             eth_dst=0xFFFFFFFFFFFF, aux=1, caplen=42)
    cols.add(n_arp_pairs, t=a_t + rng.integers(50, 800, n_arp_pairs), kind=K_ARPR, src_ip=GATEWAY_IP,
             dst_ip=a_ip, eth_src=GATEWAY_MAC, eth_dst=a_mac, aux=2, caplen=42)

    plan = cols.build()
    assert len(plan["t"]) == n_total, (len(plan["t"]), n_total)
    counts = {
        "packets": n_total,
        "tcp_flows": n_flows,
        "tcp_half_open": n_half,
        "tcp_conversations": n_conv,
        "tcp_syn": n_flows,
        "tcp_synack": n_flows,
        "tcp_handshake_ack": n_flows,
        "tcp_request": n_ex,
        "tcp_data_segment": int(is_seg.sum()),
        "tcp_full_segment": int((is_seg & ~last_seg).sum()),
        "tcp_pure_ack": int(is_ack.sum()),
        "tcp_retransmission": n_retx,
        "tcp_out_of_order": n_ooo,
        "tcp_fin": 2 * n_flows,
        "tcp_close_ack": n_flows,
        "tcp_half_open_syn": int(tries.sum()),
        "dns_query": n_dns_pairs,
        "dns_response": n_dns_pairs,
        "dns_nxdomain": int(d_nx.sum()),
        "arp_request": n_arp_pairs,
        "arp_reply": n_arp_pairs,
        "duration_s": round(float(plan["t"].max() - plan["t"].min()) / 1e6, 3),
    }
    return plan, counts


# ----------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------


def _put(buf: np.ndarray, rows, col: int, values: np.ndarray, nbytes: int) -> None:
    """Write big-endian unsigned values into buf[rows, col:col+nbytes]."""
    v = np.ascontiguousarray(np.asarray(values).astype(f">u{8 if nbytes == 6 else nbytes}"))
    b = v.view(np.uint8).reshape(-1, 8 if nbytes == 6 else nbytes)
    buf[rows, col : col + nbytes] = b[:, 2:] if nbytes == 6 else b


def _render(c: dict[str, np.ndarray], row0: int, payload: np.ndarray, dns_table: np.ndarray,
            dns_qlen: np.ndarray) -> np.ndarray:
    n = len(c["t"])
    kind = c["kind"]
    caplen = c["caplen"]
    buf = np.empty((n, ROW), dtype=np.uint8)
    buf[:, :70] = 0
    buf[:, 70:] = payload[(np.arange(row0, row0 + n) * 7919) % len(payload)]

    hdr = np.empty((n, 4), dtype="<u4")
    t = c["t"] + BASE_TS_US
    hdr[:, 0] = t // 1_000_000
    hdr[:, 1] = t % 1_000_000
    hdr[:, 2] = caplen
    hdr[:, 3] = caplen
    buf[:, 0:16] = hdr.view(np.uint8).reshape(n, 16)
    _put(buf, slice(None), 16, c["eth_dst"], 6)
    _put(buf, slice(None), 22, c["eth_src"], 6)
    is_arp = kind >= K_ARPQ
    _put(buf, slice(None), 28, np.where(is_arp, 0x0806, 0x0800), 2)

    # IPv4 (written for every row; ARP rows are overwritten below)
    is_udp = (kind == K_DNSQ) | (kind == K_DNSR)
    proto = np.where(is_udp, 17, 6)
    totlen = caplen - 14
    ipid = (c["seq"] * 40_503 + t) & 0xFFFF
    src, dst, ttl = c["src_ip"], c["dst_ip"], c["ttl"]
    s = (0x4500 + totlen + ipid + 0x4000 + (ttl << 8 | proto) + (src >> 16) + (src & 0xFFFF) + (dst >> 16)
         + (dst & 0xFFFF))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    buf[:, 30] = 0x45
    _put(buf, slice(None), 32, totlen, 2)
    _put(buf, slice(None), 34, ipid, 2)
    buf[:, 36] = 0x40
    buf[:, 38] = ttl
    buf[:, 39] = proto
    _put(buf, slice(None), 40, ~s & 0xFFFF, 2)
    _put(buf, slice(None), 42, src, 4)
    _put(buf, slice(None), 46, dst, 4)

    # TCP (written for every row; UDP/ARP rows are overwritten below)
    opt = c["opt"]
    _put(buf, slice(None), 50, c["sport"], 2)
    _put(buf, slice(None), 52, c["dport"], 2)
    _put(buf, slice(None), 54, c["seq"], 4)
    _put(buf, slice(None), 58, c["ack"], 4)
    buf[:, 62] = ((20 + OPT_LEN[opt]) // 4) << 4
    buf[:, 63] = c["flags"]
    _put(buf, slice(None), 64, c["win"], 2)
    tsv, tse = c["tsval"], c["tsecr"]
    m = opt == 1
    if m.any():
        buf[m, 70:74] = (1, 1, 8, 10)
        _put(buf, m, 74, tsv[m], 4)
        _put(buf, m, 78, tse[m], 4)
    m = opt == 2
    if m.any():
        buf[m, 70:78] = (2, 4, 0x05, 0xB4, 4, 2, 8, 10)
        _put(buf, m, 78, tsv[m], 4)
        _put(buf, m, 82, tse[m], 4)
        buf[m, 86:90] = (1, 3, 3, 7)
    m = opt == 3
    if m.any():
        buf[m, 70:82] = (2, 4, 0x05, 0xB4, 1, 3, 3, 8, 1, 1, 4, 2)

    # TLS record headers (17 03 03 len) inside TCP payloads, at their offsets in the request/response
    plen = c["plen"]
    m = (kind == K_TCP) & (plen > 0)
    if m.any():
        rows = np.flatnonzero(m)
        o, ln, total = c["moff"][rows], plen[rows], c["mlen"][rows]
        pcol = 70 + OPT_LEN[opt[rows]]
        n_rec = np.maximum(total // TLS_RECORD, 1)
        n_rec = np.where(total - n_rec * TLS_RECORD >= 22, n_rec + 1, n_rec)
        j = np.maximum(o - 4 + TLS_RECORD - 1, 0) // TLS_RECORD
        h = j * TLS_RECORD
        hit = (j < n_rec) & (h < o + ln)
        end = np.where(j + 1 < n_rec, h + TLS_RECORD, total)
        content = end - h - 5
        hdr5 = (0x17, 0x03, 0x03)
        for b in range(5):
            at = h + b - o
            ok = hit & (at >= 0) & (at < ln)
            val = hdr5[b] if b < 3 else (content >> (8 * (4 - b))) & 0xFF
            buf[rows[ok], (pcol + at)[ok]] = val if b < 3 else val[ok]

    # UDP + DNS
    if is_udp.any():
        rows = np.flatnonzero(is_udp)
        _put(buf, rows, 54, caplen[rows] - 34, 2)
        buf[rows, 56:58] = 0
        name = c["aux"][rows]
        body = dns_table[name]
        resp = kind[rows] == K_DNSR
        nx = c["flags"][rows] != 0
        _put(body, slice(None), 0, c["seq"][rows], 2)
        _put(body, slice(None), 2, np.where(resp, np.where(nx, 0x8183, 0x8180), 0x0100), 2)
        _put(body, slice(None), 6, resp & ~nx, 2)
        ip_col = 12 + dns_qlen[name] + 4 + 12
        ans = c["ack"][rows]
        for i in range(4):
            body[np.arange(len(rows)), ip_col + i] = (ans >> (24 - 8 * i)) & 0xFF
        buf[rows, 58 : 58 + body.shape[1]] = body

    # ARP
    if is_arp.any():
        rows = np.flatnonzero(is_arp)
        op = c["aux"][rows]
        buf[rows, 30:38] = (0, 1, 8, 0, 6, 4, 0, 0)
        buf[rows, 37] = op
        _put(buf, rows, 38, c["eth_src"][rows], 6)
        _put(buf, rows, 44, c["src_ip"][rows], 4)
        _put(buf, rows, 48, np.where(op == 2, c["eth_dst"][rows], 0), 6)
        _put(buf, rows, 54, c["dst_ip"][rows], 4)

    keep = np.arange(ROW)[None, :] < (16 + caplen)[:, None]
    return buf[keep]


def write_benchmark_capture(path: str | os.PathLike, packets: int, seed: int = 1,
                            flows: int | None = None) -> dict:
    """Write the deterministic benchmark capture to path; return packet counts by kind (plus bytes).

    flows defaults to packets/100 full TCP connections.  The same (packets, seed, flows) always produces the
    same bytes.
    """
    plan, counts = _plan(packets, seed, flows)
    order = np.argsort(plan["t"], kind="stable")
    rng = np.random.default_rng(seed + 7)
    payload = rng.integers(0, 256, (257, ROW - 70), dtype=np.uint8)
    _, dns_qlen, dns_table = _dns_names()
    header = np.array([0xA1B2C3D4], "<u4").tobytes() + np.array([2, 4], "<u2").tobytes() + \
        np.array([0, 0, SNAPLEN, 1], "<u4").tobytes()
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    written = len(header)
    with open(tmp, "wb") as f:
        f.write(header)
        for i in range(0, len(order), CHUNK_ROWS):
            idx = order[i : i + CHUNK_ROWS]
            chunk = {k: v[idx] for k, v in plan.items()}
            data = _render(chunk, i, payload, dns_table, dns_qlen)
            f.write(data.data)
            written += data.nbytes
    os.replace(tmp, path)
    counts["bytes"] = written
    return counts


def cached_capture(out: Path, packets: int, seed: int, flows: int | None) -> tuple[Path, dict, bool, float]:
    """Return (path, counts, reused, generation seconds), generating the capture if not cached."""
    fl = int(flows) if flows else max(1, round(packets / 100))
    stem = f"bench_{packets}p_{fl}f_s{seed}_v{GENERATOR_VERSION}"
    path, meta = out / f"{stem}.pcap", out / f"{stem}.json"
    if path.exists() and meta.exists():
        counts = json.loads(meta.read_text())
        if counts.get("bytes") == path.stat().st_size:
            return path, counts, True, 0.0
    t0 = time.perf_counter()
    counts = write_benchmark_capture(path, packets, seed=seed, flows=fl)
    elapsed = time.perf_counter() - t0
    meta.write_text(json.dumps(counts, indent=2) + "\n")
    return path, counts, False, elapsed


# ----------------------------------------------------------------------------------------------------------
# Measurement
# ----------------------------------------------------------------------------------------------------------


# The measuring helper runs in a fresh, small interpreter (no numpy): on Linux a child's ru_maxrss starts at
# the high-water RSS of the process it was forked from (exec records the old mm's peak), so spawning the tool
# straight from this process, which holds the generator's arrays, would inflate the figure.
MEASURE_HELPER = r"""
import json, os, subprocess, sys, threading, time

def _field_kb(path, name):
    with open(path) as fh:
        for line in fh:
            if line.startswith(name):
                return int(line.split()[1])
    return 0

def tree_mem_kb(root):
    # (sum of RSS, sum of PSS) over the process tree: PSS splits shared pages among their sharers
    rss = pss = 0
    stack = [root]
    while stack:
        pid = stack.pop()
        try:
            rss += _field_kb(f"/proc/{pid}/status", "VmRSS:")
            pss += _field_kb(f"/proc/{pid}/smaps_rollup", "Pss:")
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children") as fh:
                    stack.extend(int(x) for x in fh.read().split())
        except (OSError, ValueError):
            continue
    return rss, pss

out_path, err_path, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
peak, done = [0, 0], threading.Event()
with open(out_path, "wb") as out, open(err_path, "wb") as err:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)

    def sample():
        while not done.wait(0.02):
            rss, pss = tree_mem_kb(proc.pid)
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)

    sampler = threading.Thread(target=sample, daemon=True)
    if os.environ.get("BENCH_SAMPLE") == "1":
        sampler.start()
    _, status, ru = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    done.set()
    if sampler.is_alive():
        sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
print(json.dumps({"returncode": proc.returncode, "seconds": elapsed, "user_s": ru.ru_utime,
                  "sys_s": ru.ru_stime, "maxrss_kb": ru.ru_maxrss, "tree_rss_sampled_kb": peak[0],
                  "tree_pss_sampled_kb": peak[1]}))
"""


def measure(cmd: list[str], stdout_path: Path, stderr_path: Path, *, sample: bool = False) -> dict:
    """Run cmd once as its own process (via the helper): wall seconds, CPU seconds, ru_maxrss and, when
    `sample`, the peak RSS and PSS sums of its process tree (sampling slows the tool: never time such a run)."""
    env = {**os.environ, "BENCH_SAMPLE": "1" if sample else "0"}
    helper = subprocess.run([sys.executable, "-S", "-c", MEASURE_HELPER, str(stdout_path), str(stderr_path),
                             *cmd], capture_output=True, text=True, check=True, env=env)
    r = json.loads(helper.stdout)
    maxrss_mb, tree_mb = r.pop("maxrss_kb") / 1024, r.pop("tree_rss_sampled_kb") / 1024
    pss_mb = r.pop("tree_pss_sampled_kb") / 1024
    return {"cmd": cmd, **r, "maxrss_mb": maxrss_mb, "tree_rss_sampled_mb": tree_mb, "tree_pss_sampled_mb": pss_mb,
            "peak_rss_mb": max(maxrss_mb, pss_mb)}


def _warm(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def _find_packet_count(doc) -> int | None:
    """Best-effort: the packet total pcapsense reports in its JSON document."""
    keys = ("packets", "packet_count", "total_packets", "packets_total", "frames")
    queue = [doc]
    while queue:
        d = queue.pop(0)
        if isinstance(d, dict):
            for key in keys:
                if isinstance(d.get(key), int) and not isinstance(d.get(key), bool):
                    return d[key]
            queue.extend(v for v in d.values() if isinstance(v, dict))
    return None


def _compile_bytecode() -> None:
    """Measure pcapsense as installed: pip writes bytecode at install time, but an editable install run with
    PYTHONDONTWRITEBYTECODE=1 (as some CI and sandbox images set) compiles every module from source on every
    start, ~0.3 s that no installed copy pays. compileall writes the bytecode whatever that variable says."""
    specs = [importlib.util.find_spec(name) for name in ("pcapsense", "pcapsense_detectors")]  # not imported
    found = [os.path.dirname(spec.origin) for spec in specs if spec is not None and spec.origin]
    if found:
        subprocess.run([sys.executable, "-m", "compileall", "-q", *found], capture_output=True, check=False)


def _console_script() -> str | None:
    """The `pcapsense` script installed with this interpreter (beside it, as in a venv), else the one on PATH.

    A version manager's shim on PATH (pyenv's is a shell script that resolves the Python version through
    several more scripts) adds ~0.1 s to every start that an installed copy does not pay: the script beside
    sys.executable is the one the shim would end up running."""
    beside = Path(sys.executable).with_name("pcapsense")
    return str(beside) if os.access(beside, os.X_OK) else shutil.which("pcapsense")


def _pcapsense_cmd(template: str | None, path: Path) -> list[str]:
    if template:
        return [a.replace("{file}", str(path)) for a in shlex.split(template)]
    exe = _console_script()
    base = [exe] if exe else [sys.executable, "-m", "pcapsense"]
    return [*base, "analyze", str(path), "--format", "json", "--no-report", "-q"]


@dataclass
class Tool:
    """One command under test and what its runs measured."""

    name: str
    cmd: list[str]
    packets: int
    tag: str
    forks: bool  # runs child processes that share pages: needs a sampled (untimed) memory run
    runs: list[dict] = field(default_factory=list)
    memory_run: dict | None = None

    def run(self, out: Path, *, sample: bool = False) -> dict:
        return measure(self.cmd, out / f"{self.tag}.stdout", out / f"{self.tag}.stderr", sample=sample)

    @property
    def failed(self) -> bool:
        return any(r["returncode"] != 0 for r in self.runs)


def run_tools(tools: list[Tool], out: Path, repeat: int) -> list[dict]:
    """Timed runs with the tools taking turns, then one sampled memory run per forking tool."""
    for _ in range(repeat):
        for tool in tools:
            if not tool.failed:
                tool.runs.append(tool.run(out))
    for tool in tools:
        if tool.forks and not tool.failed:
            tool.memory_run = tool.run(out, sample=True)
    return [_result(tool, out) for tool in tools]


def _result(tool: Tool, out: Path) -> dict:
    runs = tool.runs + ([tool.memory_run] if tool.memory_run else [])
    timed = [r for r in tool.runs if r["returncode"] == 0]
    best = min(timed, key=lambda r: r["seconds"]) if not tool.failed else tool.runs[-1]
    res = {"tool": tool.name, "packets": tool.packets, **best,
           "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
           "runs": [{k: r[k] for k in ("seconds", "user_s", "sys_s", "maxrss_mb", "tree_rss_sampled_mb",
                                         "tree_pss_sampled_mb", "returncode")} | {"sampled": r is tool.memory_run}
                    for r in runs]}
    res["packets_per_s"] = tool.packets / res["seconds"] if res["returncode"] == 0 and res["seconds"] > 0 else None
    if res["returncode"] != 0:
        res["stderr_tail"] = (out / f"{tool.tag}.stderr").read_text(errors="replace")[-2000:]
    elif tool.tag == "tshark":
        text = (out / f"{tool.tag}.stdout").read_text(errors="replace")
        res["conversations"] = sum(1 for line in text.splitlines() if "<->" in line)
    else:
        try:
            with open(out / f"{tool.tag}.stdout", "rb") as fh:
                res["reported_packets"] = _find_packet_count(json.load(fh))
        except (ValueError, OSError) as exc:
            res["json_error"] = str(exc)[:200]
    return res


def _fmt_row(r: dict) -> str:
    if r["returncode"] != 0:
        return f"{r['tool']:<16} {r['packets']:>10,} {'exit ' + str(r['returncode']):>9} {'-':>9} {'-':>12} {'-':>12}"
    return (f"{r['tool']:<16} {r['packets']:>10,} {r['seconds']:>9.2f} {r['user_s'] + r['sys_s']:>9.2f} "
            f"{r['packets_per_s']:>12,.0f} {r['peak_rss_mb']:>12.1f}")


def _tshark_version(exe: str) -> str | None:
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0] if out else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packets", type=int, default=2_000_000, help="capture size (default 2000000)")
    ap.add_argument("--flows", type=int, default=None, help="full TCP connections (default packets/100)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=HERE / "out", help="work/cache dir (default benchmarks/out)")
    ap.add_argument("--skip-tshark", action="store_true", help="do not run tshark")
    ap.add_argument("--keep", action="store_true",
                    help="keep captures generated by this run in --out for reuse (deleted otherwise)")
    ap.add_argument("--flat-check", action="store_true",
                    help="also run pcapsense on N/4 packets (same flow count) and compare peak RSS")
    ap.add_argument("--repeat", type=int, default=1, help="runs per tool; the fastest is reported")
    ap.add_argument("--pcapsense-cmd", default=None,
                    help="override the pcapsense command line; {file} is replaced by the capture path")
    ap.add_argument("--tshark", default="tshark", help="tshark executable")
    ap.add_argument("--generate-only", action="store_true", help="write the capture(s) and stop")
    args = ap.parse_args(argv)

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    gitignore = out / ".gitignore"
    if not gitignore.exists():
        gitignore.write_text("*\n")
    flows = args.flows or max(1, round(args.packets / 100))
    sizes = [args.packets] + ([args.packets // 4] if args.flat_check else [])
    captures, generated = {}, []
    for n in sizes:
        print(f"capture: {n:,} packets, {flows:,} flows ...", flush=True)
        path, counts, reused, gen_s = cached_capture(out, n, args.seed, flows)
        if not reused:
            generated.append(path)
        captures[n] = {"path": str(path), "reused": reused, "generate_s": round(gen_s, 2), "counts": counts}
        how = "reused" if reused else f"generated in {gen_s:.1f} s"
        print(f"  {path} ({counts['bytes'] / 1e9:.3f} GB, {how})", flush=True)
    if args.generate_only:
        return 0

    results: dict = {
        "packets": args.packets,
        "flows": flows,
        "seed": args.seed,
        "captures": captures,
        "environment": {
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "tshark": None if args.skip_tshark else _tshark_version(args.tshark),
        },
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "runs": [],
    }
    main_path = Path(captures[args.packets]["path"])
    try:
        for n in sizes:
            _warm(Path(captures[n]["path"]))
        if not args.pcapsense_cmd:
            _compile_bytecode()
        tools = [Tool("pcapsense", _pcapsense_cmd(args.pcapsense_cmd, main_path), args.packets, "pcapsense",
                      forks=True)]
        if args.flat_check:
            qn = args.packets // 4
            tools.append(Tool("pcapsense (N/4)", _pcapsense_cmd(args.pcapsense_cmd, Path(captures[qn]["path"])),
                              qn, "pcapsense_quarter", forks=True))
        if not args.skip_tshark:
            if shutil.which(args.tshark):
                tools.append(Tool("tshark", [args.tshark, "-q", "-z", "conv,tcp", "-r", str(main_path)],
                                  args.packets, "tshark", forks=False))
            else:
                print(f"warning: {args.tshark} not found; skipping it", file=sys.stderr)
        rows = run_tools(tools, out, args.repeat)
        by_tag = dict(zip((t.tag for t in tools), rows, strict=True))
        ps, quarter, ts = by_tag["pcapsense"], by_tag.get("pcapsense_quarter"), by_tag.get("tshark")
        results["runs"] = rows
    finally:
        if not args.keep:
            for p in generated:
                with contextlib.suppress(OSError):
                    p.unlink()
                    p.with_suffix(".json").unlink()

    print()
    print(f"{'tool':<16} {'packets':>10} {'seconds':>9} {'CPU s':>9} {'packets/s':>12} {'peak RSS MB':>12}")
    for r in rows:
        print(_fmt_row(r))
    for r in rows:
        if r["returncode"] != 0:
            print(f"\n{r['tool']} failed (exit {r['returncode']}):\n{r.get('stderr_tail', '')}")
    if ps.get("reported_packets") not in (None, ps["packets"]):
        print(f"warning: pcapsense reported {ps['reported_packets']:,} packets, expected {ps['packets']:,}")
    if ts is not None and ts.get("conversations") is not None:
        expect = captures[args.packets]["counts"]["tcp_conversations"]
        print(f"tshark conversations: {ts['conversations']:,} (expected {expect:,})")

    ok_ps = ps["returncode"] == 0
    targets: dict = {}
    ratio = None
    if ts is not None and ok_ps and ts["returncode"] == 0:
        ratio = ps["packets_per_s"] / ts["packets_per_s"]
        targets["speed"] = {"target": f">= {TARGET_SPEEDUP:g}x tshark packets/s", "value": round(ratio, 2),
                            "status": "PASS" if ratio >= TARGET_SPEEDUP else "FAIL"}
    else:
        targets["speed"] = {"target": f">= {TARGET_SPEEDUP:g}x tshark packets/s", "value": None,
                            "status": "FAIL" if not ok_ps else "SKIP"}
    targets["memory"] = {"target": f"<= {TARGET_RSS_MB:g} MB peak RSS",
                         "value": round(ps["peak_rss_mb"], 1) if ok_ps else None,
                         "status": "PASS" if ok_ps and ps["peak_rss_mb"] <= TARGET_RSS_MB else "FAIL"}
    if quarter is not None:
        ok = ok_ps and quarter["returncode"] == 0
        q_mb = quarter["peak_rss_mb"]
        limit = max(q_mb * (1 + TARGET_FLAT_GROWTH), q_mb + TARGET_FLAT_SLACK_MB) if ok else None
        targets["flat"] = {
            "target": f"peak RSS at N <= max(+{TARGET_FLAT_GROWTH:.0%}, +{TARGET_FLAT_SLACK_MB:g} MB) of N/4",
            "value": {"n_quarter_mb": round(quarter["peak_rss_mb"], 1) if ok else None,
                      "n_mb": round(ps["peak_rss_mb"], 1) if ok else None},
            "status": "PASS" if ok and ps["peak_rss_mb"] <= limit else "FAIL",
        }
    else:
        targets["flat"] = {"target": "flat in capture length (run with --flat-check)", "value": None,
                           "status": "SKIP"}
    results["ratio_pcapsense_over_tshark"] = ratio
    results["targets"] = targets

    print()
    if ratio is not None:
        print(f"pcapsense packets/s / tshark packets/s = {ratio:.2f}x")
    for name, tgt in targets.items():
        val = tgt["value"]
        if isinstance(val, dict):
            val = ", ".join(f"{k}={v}" for k, v in val.items())
        print(f"  [{tgt['status']}] {name:<7} {tgt['target']}  (measured: {val})")

    json_path = out / "bench_analyze.json"
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nresults: {json_path}")
    return 0 if all(t["status"] != "FAIL" for t in targets.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
