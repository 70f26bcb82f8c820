"""`python -m pcapsense` runs the same CLI as the `pcapsense` console script."""

from pcapsense.console import run

run()
