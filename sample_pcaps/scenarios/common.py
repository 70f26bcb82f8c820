"""Shared scenario machinery: hosts, a time-ordered capture, a stateful TCP conversation and small helpers.

Scenarios are written in program order ("client sends, server answers"); frames are stamped with explicit
integer-nanosecond times and sorted at the end, so an ACK can be emitted before later data that precedes
it on the wire. All randomness comes from the scenario's own `random.Random`.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

from sample_pcaps import build as b
from sample_pcaps.writer import DEFAULT_SNAPLEN, NS_PER_S, PcapFile, Record

BASE_NS = 1_700_000_000 * NS_PER_S
C, S = 0, 1  # conversation sides: client, server


def sec(x: float) -> int:
    """Seconds to nanoseconds, rounded to whole microseconds so every format can store the value exactly."""
    return round(x * 1_000_000) * 1000


def ms(x: float) -> int:
    return round(x * 1000) * 1000


def us(x: float) -> int:
    return round(x) * 1000


def jitter(rng: random.Random, max_us: int) -> int:
    """A non-negative random delay in whole microseconds."""
    return us(rng.randrange(max_us + 1))


@dataclass(frozen=True)
class Host:
    """An endpoint as the capture sees it: `mac` is the address on the captured segment (a router's for a
    remote host) and `ttl` the TTL/hop limit its packets arrive with."""

    ip: str
    mac: bytes
    ttl: int = 64

    def seen_via(self, mac: bytes, ttl: int) -> Host:
        """The same IP reached over another path (other next-hop MAC, other TTL): asymmetric routing."""
        return replace(self, mac=mac, ttl=ttl)


def host(ip: str, index: int, ttl: int = 64) -> Host:
    """A host with a locally administered MAC derived from `index`, so scenarios never collide."""
    return Host(
        ip, bytes([0x02, 0x00, (index >> 24) & 0xFF, (index >> 16) & 0xFF, (index >> 8) & 0xFF, index & 0xFF]), ttl
    )


class Capture:
    """Frames on one or more interfaces; `linktypes[i]` decides how frames on interface i are encoded."""

    def __init__(
        self,
        rng: random.Random,
        linktypes: Sequence[int] = (b.DLT_EN10MB,),
        *,
        tags: Sequence[tuple[int, int]] = (),
        local: bytes | None = None,
    ) -> None:
        self.rng = rng
        self.linktypes = list(linktypes)
        self.tags = tuple(tags)
        self.local = local
        self._frames: list[tuple[int, int, Record]] = []
        self._ident: dict[str, int] = {}

    def add(self, t: int, data: bytes, iface: int = 0) -> None:
        """Append an already encoded frame."""
        self._frames.append((t, len(self._frames), Record(t, data, iface)))

    def frame(self, t: int, src: bytes, dst: bytes, ethertype: int, payload: bytes, iface: int = 0) -> None:
        """Encode for the interface's link type; silently dropped when that link cannot carry it."""
        data = b.encode_link(self.linktypes[iface], src, dst, ethertype, payload, tags=self.tags, local=self.local)
        if data is not None:
            self.add(t, data, iface)

    def next_ident(self, ip: str) -> int:
        """Per-source IP ID counter with a random start, like a host's global counter."""
        value = self._ident.get(ip, self.rng.randrange(0x10000))
        self._ident[ip] = (value + 1) & 0xFFFF
        return value

    def ip(
        self,
        t: int,
        src: Host,
        dst: Host,
        proto: int,
        payload: bytes,
        *,
        iface: int = 0,
        ttl: int | None = None,
        df: bool = True,
    ) -> bytes:
        """Emit an IP packet from `src` to `dst`; returns the L3 bytes (ICMP errors quote them)."""
        packet = b.ip(
            src.ip, dst.ip, proto, payload, ttl=src.ttl if ttl is None else ttl, ident=self.next_ident(src.ip), df=df
        )
        ethertype = b.ETH_IPV6 if b.is_v6(src.ip) else b.ETH_IPV4
        self.frame(t, src.mac, dst.mac, ethertype, packet, iface)
        return packet

    def udp(self, t: int, src: Host, dst: Host, sport: int, dport: int, payload: bytes, iface: int = 0) -> bytes:
        return self.ip(t, src, dst, b.PROTO_UDP, b.udp(src.ip, dst.ip, sport, dport, payload), iface=iface)

    def arp_request(self, t: int, sender: Host, target_ip: str, iface: int = 0) -> None:
        payload = b.arp(b.ARP_REQUEST, sender.mac, sender.ip, b"\0" * 6, target_ip)
        self.frame(t, sender.mac, b.BROADCAST, b.ETH_ARP, payload, iface)

    def arp_reply(self, t: int, sender: Host, requester: Host, iface: int = 0) -> None:
        payload = b.arp(b.ARP_REPLY, sender.mac, sender.ip, requester.mac, requester.ip)
        self.frame(t, sender.mac, requester.mac, b.ETH_ARP, payload, iface)

    def neighbour_solicit(self, t: int, sender: Host, target_ip: str, iface: int = 0) -> None:
        """ICMPv6 NS to the target's solicited-node group (hop limit 255, as ND requires)."""
        group = b.solicited_node(target_ip)
        packet = b.ipv6(sender.ip, group, b.PROTO_ICMPV6, b.icmpv6_ns(sender.ip, target_ip, sender.mac), hlim=255)
        self.frame(t, sender.mac, b.multicast_mac(group), b.ETH_IPV6, packet, iface)

    def neighbour_advert(self, t: int, target: Host, requester: Host, iface: int = 0) -> None:
        """Solicited ICMPv6 NA from the target back to the requester."""
        body = b.icmpv6_na(target.ip, requester.ip, target.ip, target.mac)
        packet = b.ipv6(target.ip, requester.ip, b.PROTO_ICMPV6, body, hlim=255)
        self.frame(t, target.mac, requester.mac, b.ETH_IPV6, packet, iface)

    def records(self) -> list[Record]:
        """Frames in time order; ties keep program order so output never depends on sort stability quirks."""
        return [rec for _, _, rec in sorted(self._frames, key=lambda f: (f[0], f[1]))]

    def pcap(self, *, big_endian: bool = False, snaplen: int = DEFAULT_SNAPLEN) -> PcapFile:
        """Single-interface capture as a classic microsecond pcap file."""
        return PcapFile(self.linktypes[0], self.records(), big_endian=big_endian, snaplen=snaplen)


class TcpConn:
    """One TCP connection: sequence/ack/timestamp state per side and a simple timing model.

    The capture point sits next to the client (`near_client=True`) or the server: packets from the near
    side follow what they answer after `proc`, packets from the far side after `rtt + proc`. Each side's
    receive state honours `lost=True` segments, so cumulative ACKs stop at a hole and carry SACK blocks
    exactly as on the wire. Packets from an `invisible` side reach the peer but never the capture (the
    other half of an asymmetric path).
    """

    def __init__(
        self,
        cap: Capture,
        client: Host,
        server: Host,
        cport: int,
        sport: int,
        *,
        t: int,
        rtt: int = ms(20),
        near_client: bool = True,
        mss: tuple[int, int] = (1460, 1460),
        timestamps: bool = True,
        reply_via: Host | None = None,
        ifaces: tuple[int, int] = (0, 0),
        proc: int = us(60),
        invisible: Sequence[int] = (),
    ) -> None:
        rng = cap.rng
        self.cap = cap
        self.t = t
        self.rtt, self.proc, self.near_client = rtt, proc, near_client
        self.src = (client, reply_via or server)
        self.dst = (server, client)
        self.ports = ((cport, sport), (sport, cport))
        self.mss = mss
        self.ifaces = ifaces
        self.timestamps = timestamps
        self.invisible = frozenset(invisible)
        self.snd = [rng.getrandbits(32), rng.getrandbits(32)]
        self.rcv = [0, 0]
        self._arrived: list[dict[int, int]] = [{}, {}]
        self._ts_base = [rng.getrandbits(30), rng.getrandbits(30)]
        self._ts_heard: list[list[tuple[int, int]]] = [[], []]
        self._t0 = t

    # ---------------------------------------------------------------- timing
    def delay(self, side: int) -> int:
        """Time from the capture seeing the peer's packet to seeing `side`'s reaction."""
        near = (side == C) == self.near_client
        return self.proc if near else self.rtt + self.proc

    @staticmethod
    def wire_gap(size: int) -> int:
        """Back-to-back spacing of a `size`-byte payload at 1 Gbit/s, in whole microseconds."""
        return us(max(1, round((size + 78) * 8 / 1000)))

    def seg_size(self, side: int) -> int:
        """Payload per full-size segment from `side`: the peer's MSS minus the timestamp option."""
        return self.mss[1 - side] - (12 if self.timestamps else 0)

    # ---------------------------------------------------------------- packets
    def _receive(self, side: int, seq: int, length: int) -> None:
        """Record arrival of [seq, seq+length) at `side` and advance its cumulative ACK point (mod 2^32)."""
        end = (seq + length) & 0xFFFFFFFF
        ahead = (end - self.rcv[side]) & 0xFFFFFFFF
        if ahead == 0 or ahead > 0x7FFFFFFF:
            return  # old data again (a retransmission the peer already had)
        arrived = self._arrived[side]
        arrived[seq] = end
        while self.rcv[side] in arrived:
            self.rcv[side] = arrived.pop(self.rcv[side])

    def _ts_echo(self, side: int, at: int) -> int:
        """TSecr: the newest peer TSval that reached `side` strictly before `at` (time order, not program order)."""
        heard = self._ts_heard[side]
        i = bisect.bisect_left(heard, (at, -1))
        return heard[i - 1][1] if i else 0

    def emit(
        self, side: int, flags: int, payload: bytes = b"", *, at: int, seq: int | None = None, lost: bool = False
    ) -> bytes:
        """Emit one segment from `side` at time `at` and return its IP bytes (empty if invisible).

        `seq=None` sends new data and advances the send point; an explicit `seq` is a retransmission.
        ACKs carry the side's cumulative ACK point and SACK blocks for whatever it holds beyond it."""
        other = 1 - side
        new = seq is None
        seq = self.snd[side] if seq is None else seq
        length = len(payload) + (1 if flags & (b.SYN | b.FIN) else 0)
        if new:
            self.snd[side] = (seq + length) & 0xFFFFFFFF
        if flags & b.SYN and not lost:
            self.rcv[other] = seq
        if length and not lost:
            self._receive(other, seq, length)
        ack = self.rcv[side] if flags & b.ACK else 0
        tsval = (self._ts_base[side] + (at - self._t0) // ms(1)) & 0xFFFFFFFF
        ts = (tsval, self._ts_echo(side, at)) if self.timestamps else None
        if flags & b.SYN:
            options, window = b.tcp_syn_options(self.mss[side], ts=ts), 64240
        else:
            sack = sorted(self._arrived[side].items())[:3] if flags & b.ACK else []
            options, window = b.tcp_options(ts, sack), 502
        if not lost:
            bisect.insort(self._ts_heard[other], (at, tsval))
        src, dst = self.src[side], self.dst[side]
        sport, dport = self.ports[side]
        segment = b.tcp(src.ip, dst.ip, sport, dport, seq, ack, flags, payload, window=window, options=options)
        if side in self.invisible:
            return b""
        return self.cap.ip(at, src, dst, b.PROTO_TCP, segment, iface=self.ifaces[side])

    # ---------------------------------------------------------------- conversation steps
    def handshake(self) -> None:
        """SYN, SYN-ACK, ACK with MSS/SACK-permitted/timestamps/window-scale options on both SYNs."""
        self.emit(C, b.SYN, at=self.t)
        self.t += self.delay(S)
        self.emit(S, b.SYN | b.ACK, at=self.t)
        self.t += self.delay(C)
        self.emit(C, b.ACK, at=self.t)

    def established(self) -> None:
        """Pretend the handshake happened before the capture started (mid-stream flows)."""
        self.rcv = [self.snd[S], self.snd[C]]

    def send(
        self,
        side: int,
        data: bytes,
        *,
        ack_every: int = 2,
        final_ack: bool = True,
        seg: int | None = None,
        lost: Sequence[int] = (),
    ) -> list[tuple[int, bytes]]:
        """Send `data` from `side` in full-size segments and return them as (seq, payload).

        The peer ACKs every `ack_every` segments and, unless a reply will piggyback the ACK
        (`final_ack=False`), the last one. Segments whose index is in `lost` never arrive; every segment
        that arrives behind a hole triggers an immediate duplicate ACK with SACK."""
        size = seg or self.seg_size(side)
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        other = 1 - side
        sent: list[tuple[int, bytes]] = []
        arrived = 0
        t = self.t + self.delay(side)
        for i, chunk in enumerate(chunks):
            last = i == len(chunks) - 1
            sent.append((self.snd[side], chunk))
            self.emit(side, b.ACK | (b.PSH if last else 0), chunk, at=t, lost=i in lost)
            if i not in lost:
                arrived += 1
                due = ack_every and (arrived % ack_every == 0 or (last and final_ack))
                if due or self._arrived[other]:
                    self.emit(other, b.ACK, at=t + self.delay(other))
            if not last:
                t += self.wire_gap(len(chunk))
        self.t = t
        return sent

    def exchange(self, request: bytes, response: bytes) -> None:
        """Request from the client, response from the server, final ACK from the client."""
        self.send(C, request, final_ack=False)
        self.send(S, response)
        self.t += self.delay(C)

    def close(self, first: int = C) -> None:
        """FIN from `first`, FIN-ACK from the peer, last ACK from `first` (which then holds TIME_WAIT)."""
        other = 1 - first
        self.t += self.delay(first)
        self.emit(first, b.FIN | b.ACK, at=self.t)
        self.t += self.delay(other)
        self.emit(other, b.FIN | b.ACK, at=self.t)
        self.t += self.delay(first)
        self.emit(first, b.ACK, at=self.t)

    def idle(self, duration: int) -> None:
        self.t += duration


def dns_exchange(
    cap: Capture,
    t: int,
    client: Host,
    server: Host,
    qname: str | Sequence[bytes],
    *,
    qtype: int = b.QTYPE_A,
    answers: Sequence[b.DnsAnswer] = (),
    rcode: int = b.RCODE_NOERROR,
    latency: int | None = ms(2),
    truncated: bool = False,
    sport: int | None = None,
    txid: int | None = None,
    iface: int = 0,
) -> None:
    """Query over UDP/53 and (unless `latency` is None) its response after `latency`."""
    sport = cap.rng.randrange(32768, 61000) if sport is None else sport
    txid = cap.rng.randrange(0x10000) if txid is None else txid
    cap.udp(t, client, server, sport, 53, b.dns_query(txid, qname, qtype), iface=iface)
    if latency is not None:
        reply = b.dns_response(txid, qname, qtype, rcode=rcode, answers=answers, truncated=truncated)
        cap.udp(t + latency, server, client, 53, sport, reply, iface=iface)


def tls12_handshake(
    conn: TcpConn, rng: random.Random, sni: bytes, *, cert_sizes: Sequence[int] = (1650, 1180, 1020)
) -> None:
    """Full TLS 1.2 handshake: ClientHello; ServerHello+Certificate+ServerKeyExchange+ServerHelloDone in one
    flight; ClientKeyExchange+CCS+Finished; CCS+Finished."""
    conn.send(C, b.client_hello(rng, sni), final_ack=False)
    flight = (
        b.server_hello(rng) + b.certificate(rng, sni, cert_sizes) + b.server_key_exchange(rng) + b.server_hello_done()
    )
    conn.send(S, b.tls_record(b.TLS_HANDSHAKE, flight))
    conn.send(C, b.client_key_exchange(rng) + b.change_cipher_spec() + b.encrypted_handshake(rng), final_ack=False)
    conn.send(S, b.change_cipher_spec() + b.encrypted_handshake(rng))


def healthy_mix(cap: Capture, t: int, rng: random.Random, *, index: int = 1, v6: bool = False, iface: int = 0) -> int:
    """A short healthy exchange for format-variant files: neighbour resolution (where the link carries it),
    DNS, and an HTTP GET over a complete TCP connection. Returns the time of the last frame."""
    if v6:
        client, gateway = host(f"2001:db8:{index}::10", 10 + index), host(f"2001:db8:{index}::1", 1 + 100 * index)
        server_ip, resolver_ip, qtype = "2001:db8:ff::80", f"2001:db8:{index}::53", b.QTYPE_AAAA
    else:
        client, gateway = host(f"192.168.{index}.10", 10 + index), host(f"192.168.{index}.1", 1 + 100 * index)
        server_ip, resolver_ip, qtype = "93.184.216.34", f"192.168.{index}.53", b.QTYPE_A
    resolver, server = Host(resolver_ip, gateway.mac), Host(server_ip, gateway.mac, ttl=54)
    if v6:
        cap.neighbour_solicit(t, client, gateway.ip, iface)
        cap.neighbour_advert(t + us(150), gateway, client, iface)
    else:
        cap.arp_request(t, client, gateway.ip, iface)
        cap.arp_reply(t + us(180), gateway, client, iface)
    t += ms(1)
    answer = b.aaaa_record(server_ip) if v6 else b.a_record(server_ip)
    dns_exchange(
        cap, t, client, resolver, "www.example.com", qtype=qtype, answers=[answer], latency=us(1850), iface=iface
    )
    conn = TcpConn(cap, client, server, rng.randrange(40000, 60000), 80, t=t + ms(3), rtt=ms(18), ifaces=(iface, iface))
    conn.handshake()
    conn.exchange(
        b.http_request("GET", "/", b"www.example.com", [(b"User-Agent", b"curl/8.5.0")]),
        b.http_response(200, "OK", rng.randbytes(2000), [(b"Content-Type", b"text/html")]),
    )
    conn.close(C)
    return conn.t
