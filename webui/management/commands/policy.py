"""Protection policies and notification targets from the command line (what Datacenter -> Protection does).

    manage.py policy list
    manage.py policy create nightly selection=tag tag=prod snapshot_schedule=hourly snapshot_expiry=2d \\
        snap_keep_last=24 'backup={"schedule": "02:00", "keep_daily": 7}' targets=ops-mail
    manage.py policy set nightly enabled=false
    manage.py policy preview nightly          # the next runs, snapshots and backups merged
    manage.py policy run nightly              # the snapshots now (the backup job has its own "run")
    manage.py policy restore-test nightly     # prove the newest archives restore, boot and pass the checks
    manage.py policy restore-tests            # the results, newest first (restore-tests NAME: one policy's)
    manage.py policy delete nightly
    manage.py policy eol-report               # containers on a distribution past its end of life (all=1: every known)
    manage.py policy targets
    manage.py policy target-set ops-hook kind=webhook url=https://hooks.example.org/caisson
    manage.py policy target-set ops-hook 'headers={"Authorization": "Bearer ..."}'
    manage.py policy target-delete ops-hook

Fields are ``KEY=VALUE``; a VALUE that reads as JSON (numbers, true/false,
null, lists, objects) is taken as such, anything else as text.  Every change
goes through the same checks and rights (``Sys.Modify`` on ``/``) as the page
and the API, as ``--user`` (default ``$CAISSON_ADMIN_USER`` or ``admin``).
Exit codes: 0 done (eol-report: none past end of life), 1 eol-report found some,
2 bad input, 3 no such policy or target or user, 4 permission denied,
6 refused (nothing to run, or a run still going on).
"""

from __future__ import annotations

import json

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management.base import CommandError

from webui.access import Access
from webui.actions import protection
from webui.api.serializers.protection import (
    NotificationTargetSerializer,
    ProtectionPolicySerializer,
    RestoreTestSerializer,
    preview,
)
from webui.management.admin_command import AdminCommand
from webui.models import Container, NotificationTarget, ProtectionPolicy, RestoreTest
from webui.models.queue import JobRefused

BAD_INPUT, NOT_FOUND, DENIED, REFUSED = 2, 3, 4, 6


def table(headers: list[str], rows: list[list], out) -> None:
    """Columns padded to their widest cell (the engine's CLI has its own; the web tier may not import it)."""
    cells = [headers, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for row in cells:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


def emit_json(data) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def fields(pairs: list[str]) -> dict:
    data = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise CommandError(f"'{pair}': give fields as KEY=VALUE", returncode=BAD_INPUT)
        try:
            data[key] = json.loads(raw)
        except json.JSONDecodeError:
            data[key] = raw
    return data


class Command(AdminCommand):
    help = "Protection policies (scheduled snapshots, the backup job, retention) and notification targets."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "verb",
            choices=[
                "list",
                "show",
                "create",
                "set",
                "delete",
                "run",
                "preview",
                "restore-test",
                "restore-tests",
                "eol-report",
                "targets",
                "target-set",
                "target-delete",
            ],
            help="what to do (see above)",
        )
        parser.add_argument("name", nargs="?", help="the policy's (or target's) name")
        parser.add_argument("fields", nargs="*", metavar="KEY=VALUE", help="fields to set (create, set, target-set)")

    def handle(self, *args, **options):
        users = get_user_model()
        user = users.objects.filter(username=options["user"], is_active=True).first()
        if user is None:
            raise CommandError(f"no active user '{options['user']}' (see --user)", returncode=NOT_FOUND)
        self.access, self.json = Access(user), options["output"] == "json"
        verb, name = options["verb"], options["name"]
        if verb not in ("list", "targets", "restore-tests", "eol-report") and not name:
            raise CommandError(f"'{verb}' needs a name", returncode=BAD_INPUT)
        try:
            getattr(self, "do_" + verb.replace("-", "_"))(name, fields(options["fields"]))
        except ValidationError as exc:
            detail = exc.message_dict if hasattr(exc, "error_dict") else {"error": exc.messages}
            raise CommandError(
                "; ".join(f"{k}: {' '.join(map(str, v))}" for k, v in detail.items()), returncode=BAD_INPUT
            ) from None
        except PermissionDenied as exc:
            raise CommandError(f"permission denied: {exc}", returncode=DENIED) from None
        except JobRefused as exc:
            raise CommandError(str(exc), returncode=REFUSED) from None

    # ---- policies --------------------------------------------------------------------------------
    def policy(self, name: str) -> ProtectionPolicy:
        found = ProtectionPolicy.objects.filter(name=name).first()
        if found is None:
            raise CommandError(f"no protection policy '{name}'", returncode=NOT_FOUND)
        return found

    def show_policies(self, policies) -> None:
        data = ProtectionPolicySerializer(policies, many=True).data
        if self.json:
            emit_json(data)
            return
        rows = []
        for p in data:
            who = {"include": p["ctids"], "exclude": f"all but {p['ctids']}", "pool": p["pool"], "tag": p["tag"]}
            rows.append(
                [
                    p["name"],
                    "yes" if p["enabled"] else "no",
                    who.get(p["selection"], "all"),
                    p["snapshot_schedule"] or "-",
                    p["snapshot_expiry"] or "never",
                    (p["backup"] or {}).get("schedule", "-"),
                    ",".join(p["targets"]) or "-",
                    p["next_runs"][0]["time"] if p["next_runs"] else "-",
                ]
            )
        table(
            ["NAME", "ENABLED", "CONTAINERS", "SNAPSHOTS", "EXPIRY", "BACKUPS", "NOTIFY", "NEXT RUN"], rows, self.stdout
        )

    def do_list(self, name, data) -> None:
        self.show_policies(ProtectionPolicy.objects.select_related("pool", "backup").prefetch_related("targets"))

    def do_show(self, name, data) -> None:
        self.show_policies([self.policy(name)])

    def do_create(self, name, data) -> None:
        policy = protection.save_policy(self.access, {"name": name, **data})
        self.show_policies([policy])

    def do_set(self, name, data) -> None:
        self.show_policies([protection.save_policy(self.access, data, self.policy(name))])

    def do_delete(self, name, data) -> None:
        protection.delete_policy(self.access, self.policy(name))
        self.stdout.write(f"deleted policy {name}\n")

    def do_run(self, name, data) -> None:
        jobs = protection.run_now(self.access, self.policy(name))
        if self.json:
            emit_json([j.summary() for j in jobs])
        else:
            table(["JOB", "NODE", "UPID"], [[j.pk, j.node.name, j.upid] for j in jobs], self.stdout)

    def do_restore_test(self, name, data) -> None:
        jobs = protection.restore_test_now(self.access, self.policy(name))
        if self.json:
            emit_json([j.summary() for j in jobs])
        else:
            table(["JOB", "NODE", "UPID"], [[j.pk, j.node.name, j.upid] for j in jobs], self.stdout)

    def do_restore_tests(self, name, data) -> None:
        rows = RestoreTest.objects.select_related("node", "policy")
        if name:
            rows = rows.filter(policy=self.policy(name))
        data = RestoreTestSerializer(rows[: int(data.get("count", 20))], many=True).data
        if self.json:
            emit_json(data)
            return
        table(
            ["WHEN", "CT", "ARCHIVE", "RESULT", "SECONDS", "REASON"],
            [
                [
                    r["created"][:19],
                    r["ctid"],
                    r["archive"],
                    "passed" if r["passed"] else "FAILED",
                    round(sum(r["timings"].values()), 2),
                    r["reason"] or "-",
                ]
                for r in data
            ],
            self.stdout,
        )

    def do_eol_report(self, name, data) -> None:
        from webui.eol import report

        visible = [c for c in Container.objects.select_related("node") if self.access.can("VM.Audit", c)]
        rows = report(visible, all_known=bool(data.get("all")))
        if self.json:
            emit_json(rows)
            return
        table(
            ["CT", "NAME", "NODE", "DISTRIBUTION", "SUPPORT ENDED", "EXTENDED UNTIL"],
            [
                [r["ctid"], r["hostname"], r["node"], f"{r['distro']} {r['version']}", r["eol"], r["lts"] or "-"]
                for r in rows
            ],
            self.stdout,
        )
        if any(r["end_of_life"] for r in rows):
            raise CommandError(f"{sum(r['end_of_life'] for r in rows)} containers past end of life", returncode=1)

    def do_preview(self, name, data) -> None:
        runs = preview(self.policy(name), count=int(data.get("count", 10)))
        if self.json:
            emit_json(runs)
        else:
            table(["TIME", "KIND"], [[r["time"], r["kind"]] for r in runs], self.stdout)

    # ---- notification targets -----------------------------------------------------------------
    def do_targets(self, name, data) -> None:
        rows = NotificationTargetSerializer(NotificationTarget.objects.all(), many=True).data
        if self.json:
            emit_json(rows)
            return
        table(
            ["NAME", "KIND", "ENABLED", "TO", "SECRET HEADERS"],
            [
                [t["name"], t["kind"], "yes" if t["enabled"] else "no", t["mail_to"] or t["url"]]
                + [",".join(t["header_names"]) or "-"]  # names only: the values are never shown back
                for t in rows
            ],
            self.stdout,
        )

    def do_target_set(self, name, data) -> None:
        target = NotificationTarget.objects.filter(name=name).first()
        target = protection.save_target(self.access, {"name": name, **data}, target)
        self.stdout.write(f"{target.kind} target {target.name} saved\n")

    def do_target_delete(self, name, data) -> None:
        target = NotificationTarget.objects.filter(name=name).first()
        if target is None:
            raise CommandError(f"no notification target '{name}'", returncode=NOT_FOUND)
        protection.delete_target(self.access, target)
        self.stdout.write(f"deleted notification target {name}\n")
