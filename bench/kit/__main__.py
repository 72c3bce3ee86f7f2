from bench.errors import cli
from bench.kit.command import main

cli(main)
