"""Capture readers: one pass over pcap or pcapng (optionally compressed, or stdin), yielding raw batches.

The readers validate the framing themselves (dpkt's readers return wrong data silently on truncated records,
absurd lengths and undeclared interfaces) and stop at the first framing fault, keeping every record before it.
"""

from pcapsense.reader.batch import CaptureFault, Interface, RawBatch
from pcapsense.reader.open import CaptureReader, OpenCapture, open_capture

__all__ = ["CaptureFault", "CaptureReader", "Interface", "OpenCapture", "RawBatch", "open_capture"]
