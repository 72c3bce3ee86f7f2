from bench.errors import cli
from bench.report.command import main

cli(main)
