"""pcapsense: a packet-capture forensic analyzer.

Data flows one way: capture -> reader -> decoder -> flow table -> detectors -> findings -> triage -> report.
"""

__version__ = "0.1.0"
