"""The DNS messages of a decoded batch: the one payload decoding that goes with the batch itself.

Which packets are DNS (a DNS port, UDP or TCP, a payload, not malformed, a tracked flow row) depends on nothing
but the packets, so their messages are decoded with the batch: in the read-ahead child when there is one, while
its bytes are still in that process's CPU cache, and shipped to the engine with the batch (pickled: usually a few
hundred small rows). On the 2M-packet benchmark that took the engine's process, then the busier one, 0.3-0.4 s of
CPU less (its page faults on the payloads went too) and the child ~0.15 s more. The engine adds the flow columns
(packetstreams.dns). Failures are counted by kind, never fatal.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pcapsense.decode.columns import PROTO_TCP, PROTO_UDP, Packets, any_of, tracked
from pcapsense.decode.dns import RCODE_NAMES, DnsMessage, parse_dns
from pcapsense.errors import MalformedPacket

DNS_PORTS = (53, 5353, 5355)


@dataclass
class DnsMessages:
    """The decoded messages of one batch: their rows, one column value per message, and the failures."""

    rows: np.ndarray
    columns: dict[str, Any]
    malformed: Counter[str] = field(default_factory=Counter)

    @classmethod
    def of(cls, pk: Packets) -> DnsMessages:
        """Decode the DNS messages of the tracked rows of `pk` (which needs its bytes)."""
        rows = np.flatnonzero(any_of(pk.sport, DNS_PORTS) | any_of(pk.dport, DNS_PORTS))
        l4 = any_of(pk.proto[rows], (PROTO_UDP, PROTO_TCP))
        rows = rows[l4 & (pk.payload_len[rows] > 0)]
        rows = rows[tracked(pk, rows)]  # on the few DNS-port rows, not the whole batch
        malformed: Counter[str] = Counter()
        kept, messages = _parse(pk, rows, malformed)
        return cls(rows[kept], _columns(messages), malformed)

    @classmethod
    def joined(cls, parts: list[tuple[int, DnsMessages]]) -> DnsMessages:
        """The messages of consecutive batches joined into one (each given with its first row in the join)."""
        if len(parts) == 1 and parts[0][0] == 0:
            return parts[0][1]
        malformed: Counter[str] = Counter()
        for _, part in parts:
            malformed.update(part.malformed)
        columns = {name: _concat([part.columns[name] for _, part in parts]) for name in parts[0][1].columns}
        return cls(np.concatenate([part.rows + first for first, part in parts]), columns, malformed)

    def __len__(self) -> int:
        return len(self.rows)


def _parse(pk: Packets, rows: np.ndarray, malformed: Counter[str]) -> tuple[list[int], list[DnsMessage]]:
    """Decode the selected payloads; return the positions in `rows` that decoded and their messages."""
    kept: list[int] = []
    messages: list[DnsMessage] = []
    flags = zip(rows.tolist(), pk.fragment[rows].tolist(), (pk.proto[rows] == PROTO_TCP).tolist(), strict=True)
    for pos, (row, fragment, over_tcp) in enumerate(flags):
        if fragment:
            malformed["dns-fragmented-not-reassembled"] += 1
            continue
        try:
            messages.append(parse_dns(pk.payload(row), over_tcp=over_tcp))
        except MalformedPacket as exc:
            malformed[exc.kind] += 1
            continue
        kept.append(pos)
    return kept, messages


def _columns(messages: list[DnsMessage]) -> dict[str, Any]:
    """The DNS stream's columns taken from the decoded messages.

    Integer and boolean columns are built as typed arrays because pandas infers the type of a list element by
    element; qtype stays a list so that a None (no question) still turns it into floats with NaN.
    """
    fields = zip(*messages, strict=True) if messages else ((),) * len(DnsMessage._fields)
    value = dict(zip(DnsMessage._fields, fields, strict=True))
    return {
        "id": np.array(value["id"], dtype=np.int64),
        "is_response": np.array(value["is_response"], dtype=bool),
        "opcode": np.array(value["opcode"], dtype=np.int64),
        "rcode": np.array(value["rcode"], dtype=np.int64),
        "rcode_name": [RCODE_NAMES.get(rcode, str(rcode)) for rcode in value["rcode"]],
        "truncated": np.array(value["truncated"], dtype=bool),
        "qname": list(value["qname"]),
        "qtype": list(value["qtype"]),
        "ancount": np.array(value["ancount"], dtype=np.int64),
        "answers": [",".join(answers) for answers in value["answers"]],
    }


def _concat(values: list[Any]) -> Any:
    return np.concatenate(values) if isinstance(values[0], np.ndarray) else [v for part in values for v in part]
