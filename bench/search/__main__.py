from bench.errors import cli
from bench.search.command import main

cli(main)
