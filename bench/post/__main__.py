from bench.errors import cli
from bench.post.command import main

cli(main)
