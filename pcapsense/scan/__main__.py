"""`python -m pcapsense.scan scan|findings ...`: the batch commands on their own, before or without the main CLI."""

import click

from pcapsense.scan.cli import findings, scan

click.Group("pcapsense-scan", commands=[scan, findings], help="pcapsense batch scanning.")()
