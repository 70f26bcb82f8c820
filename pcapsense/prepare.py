"""Per-batch work that reads the decoded packets and nothing else: the flow grouping and packet-only streams.

The flow grouping of a batch (flowkeys.py) and the packet-only event streams (packetstreams.py: ARP, broadcasts,
NDP, ICMP errors, DNS) depend on no flow state and no other batch. Keeping them apart from the steps that do
(flows.py, events.py) keeps each step testable on a batch alone. They run in the engine's process, except the
decoding of DNS messages, which comes with the batch (decode/dnsbatch.py): run in the read-ahead child, the
grouping and the ARP, broadcast and ICMP selections took the engine's process 0.3 s less CPU on the 2M-packet
benchmark but the child 0.7 s more (arrays shipped through the slots, cold caches), and the run got no shorter.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from pcapsense import packetstreams
from pcapsense.decode.columns import Packets
from pcapsense.decode.dnsbatch import DnsMessages
from pcapsense.flowkeys import FlowKeys
from pcapsense.packetstreams import PACKET_STREAMS, Columns


@dataclass
class Prepared:
    """What a batch's packets alone tell: its flow grouping, its packet-only streams, deep-decoding failures."""

    keys: FlowKeys
    streams: dict[str, Columns]  # packet-only streams with at least one row, by name
    dns: tuple[np.ndarray, Columns] | None  # (rows, columns) of the decoded DNS messages
    malformed: Counter[str] = field(default_factory=Counter)


def prepare(pk: Packets, messages: DnsMessages, streams: frozenset[str]) -> Prepared:
    """Prepare one batch and its DNS messages (decoded with it); `streams` names the packet-only streams someone
    listens to (others are not built)."""
    malformed: Counter[str] = Counter(messages.malformed)
    keys = FlowKeys.of(pk)
    built = {name: columns for name, build in PACKET_STREAMS.items()
             if name in streams and (columns := build(pk, malformed)) is not None}
    return Prepared(keys, built, packetstreams.dns(pk, messages), malformed)
