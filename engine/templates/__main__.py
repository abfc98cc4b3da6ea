import sys

from engine.cli.thin import run

sys.exit(run("engine.templates"))
