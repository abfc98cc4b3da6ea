"""What the administrators' ``manage.py`` commands (``node``, ``policy``) share: the module's docstring as
the help text, kept as written, and the options every one of them takes."""

from __future__ import annotations

import os
import sys
from argparse import RawDescriptionHelpFormatter

from django.core.management.base import BaseCommand


class AdminCommand(BaseCommand):
    """A command acting as a Caisson user (``--user``), answering with a table or JSON (``--output``)."""

    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.formatter_class = RawDescriptionHelpFormatter
        parser.description = sys.modules[type(self).__module__].__doc__
        return parser

    def add_arguments(self, parser):
        parser.add_argument(
            "--user",
            default=os.environ.get("CAISSON_ADMIN_USER", "admin"),
            help="the user whose rights every change is checked against (default: $CAISSON_ADMIN_USER or admin)",
        )
        parser.add_argument(
            "-o", "--output", choices=["text", "json"], default="text", help="a table for people, or JSON"
        )
