"""Make the first administrator if there is none; print its password once.

The password comes from ``CAISSON_ADMIN_PASSWORD`` when set, else it is
generated and printed on this one occasion (it is not stored anywhere in
clear).  With an administrator already present, nothing changes.
"""

from __future__ import annotations

import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = __doc__.splitlines()[0]

    def add_arguments(self, parser):
        parser.add_argument("--username", default=os.environ.get("CAISSON_ADMIN_USER", "admin"))

    def handle(self, *args, **options):
        users = get_user_model()
        if users.objects.filter(is_superuser=True, is_active=True).exists():
            self.stdout.write("an administrator exists already; nothing changed")
            return
        username = options["username"]
        if users.objects.filter(username=username).exists():
            raise CommandError(f"user '{username}' exists but is not an administrator; pick another --username")
        password = os.environ.get("CAISSON_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        if len(password) < 8:
            raise CommandError("CAISSON_ADMIN_PASSWORD: at least 8 characters")
        users.objects.create_superuser(username, "", password)
        shown = "(from CAISSON_ADMIN_PASSWORD)" if os.environ.get("CAISSON_ADMIN_PASSWORD") else password
        self.stdout.write(f"created administrator '{username}' with password {shown}; it is shown only now")
