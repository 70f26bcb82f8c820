"""Built-in pcapsense detectors, installed under the import name `pcapsense_detectors`.

Each module is one detection, registered through the `pcapsense.detectors` entry-point group exactly as a
third-party detector would be.
"""
