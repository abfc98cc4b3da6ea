from django.contrib.auth.decorators import login_required
from django.urls import path

from webui.views import (
    auth,
    bulk,
    console,
    containers,
    dashboard,
    disks,
    firewall,
    health,
    jobs,
    machine,
    migrate,
    network,
    search,
    storage,
    templates,
    wizard,
)
from webui.views import backups as backup_views
from webui.views import protection as protection_views
from webui.views import recordings as rec
from webui.views import template_sources as source_views


def page(view):
    return login_required(view)


urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("favicon.ico", health.favicon, name="favicon"),
    path("login/", auth.LoginView.as_view(), name="login"),
    path("logout/", auth.LogoutView.as_view(), name="logout"),
    path("", page(dashboard.dashboard), name="dashboard"),
    path("nodes/<str:name>/", page(dashboard.node_page), name="node"),
    path("nodes/<str:name>/network/", page(network.network_page), name="node-network"),
    path("nodes/<str:key>/firewall/", page(firewall.firewall_page), {"level": "host"}, name="node-firewall"),
    path("storage/<str:node>/<str:name>/", page(storage.storage_page), name="storage"),
    path("datacenter/storage/", page(storage.storages_page), name="storages"),
    path("datacenter/storage/<str:node>/<str:op>", page(storage.storage_action), name="storage-action"),
    path("datacenter/firewall/", page(firewall.firewall_page), {"level": "cluster"}, name="dc-firewall"),
    path("firewall/<str:level>/<str:key>/<str:op>", page(firewall.firewall_action), name="firewall-action"),
    path("nodes/<str:name>/network/<str:op>", page(network.network_action), name="node-network-action"),
    path("nodes/<str:name>/remove", page(dashboard.node_remove), name="node-remove"),
    path("nodes/<str:name>/migrate-all", page(migrate.migrate_all), name="node-migrate-all"),
    path("nodes/<str:name>/<str:kind>", page(dashboard.node_power), name="node-power"),
    path("bulk", page(bulk.bulk), name="bulk"),
    path("search/", page(search.search_page), name="search"),
    path("ct/<int:ctid>/", page(containers.container_page), name="ct"),
    path("ct/<int:ctid>/power/<str:action>", page(containers.power), name="ct-power"),
    path("ct/<int:ctid>/destroy", page(containers.destroy), name="ct-destroy"),
    path("ct/<int:ctid>/config", page(containers.update_config), name="ct-config"),
    path("ct/<int:ctid>/snapshot/<str:operation>", page(containers.snapshot), name="ct-snapshot"),
    path("ct/<int:ctid>/clone", page(containers.clone), name="ct-clone"),
    path("ct/<int:ctid>/disk/<str:op>", page(disks.disk_action), name="ct-disk"),
    path("ct/<int:ctid>/machine/<str:action>", page(machine.machine_action), name="ct-machine"),
    path("ct/<int:ctid>/move-volume", page(machine.move_volume), name="ct-move-volume"),
    path("ct/<int:ctid>/migrate", page(migrate.migrate), name="ct-migrate"),
    path("ct/<int:ctid>/files/push", page(machine.push), name="ct-files-push"),
    path("ct/<int:ctid>/files/pull", page(machine.pull), name="ct-files-pull"),
    path("ct/<int:ctid>/files/pulled/<int:job_id>", page(machine.pulled), name="ct-files-pulled"),
    path("ct/<int:ctid>/firewall/", page(firewall.firewall_page), {"level": "ct"}, name="ct-firewall"),
    path("ct/<int:ctid>/make-template", page(containers.make_template), name="ct-make-template"),
    path("ct/<int:ctid>/<str:tab>/", page(containers.container_page), name="ct-tab"),
    path("create/", page(wizard.wizard), name="create"),
    path("create/validate/<str:step>", page(wizard.validate_step), name="create-validate"),
    path("create/summary", page(wizard.summary), name="create-summary"),
    path("create/submit", page(wizard.create), name="create-submit"),
    path("templates/", page(templates.templates_page), name="templates"),
    path("templates/<str:name>/<str:kind>", page(templates.template_action), name="template-action"),
    path("jobs/<int:job_id>/", page(jobs.job_page), name="job"),
    path("jobs/<int:job_id>/cancel", page(jobs.cancel), name="job-cancel"),
]

# The console: the terminal page (framed by the Console tab, or a pop-out window), its tickets, Start.
urlpatterns += [
    path("ct/<int:ctid>/console/term/", page(console.console_page), name="ct-console"),
    path("ct/<int:ctid>/console/ticket", page(console.ticket), name="ct-console-ticket"),
    path("ct/<int:ctid>/console/start", page(console.start), name="ct-console-start"),
]

# Backups: a container's Backup tab and its actions, Datacenter -> Backup.
urlpatterns += [
    path("ct/<int:ctid>/backups/fragment", page(backup_views.backup_tab), name="ct-backups"),
    path("ct/<int:ctid>/backups/now", page(backup_views.backup_now), name="ct-backup-now"),
    path("backups/<int:pk>/download", page(storage.download_backup), name="backup-download"),
    path("backups/<int:pk>/<str:what>", page(backup_views.archive_action), name="backup-action"),
    path("datacenter/backup/", page(backup_views.schedules_page), name="backup-schedules"),
    path("datacenter/template-sources/", page(source_views.sources_page), name="template-sources"),
    path(
        "datacenter/template-sources/<str:name>/<str:op>",
        page(source_views.source_action),
        name="template-source-action",
    ),
    path("datacenter/backup/<int:pk>/", page(backup_views.schedules_page), name="backup-schedule-edit"),
    path("datacenter/backup/save", page(backup_views.schedule_save), name="backup-schedule-create"),
    path("datacenter/backup/<int:pk>/save", page(backup_views.schedule_save), name="backup-schedule-save"),
    path("datacenter/backup/<int:pk>/delete", page(backup_views.schedule_delete), name="backup-schedule-delete"),
    path("datacenter/backup/<int:pk>/run", page(backup_views.schedule_run), name="backup-schedule-run"),
    path("datacenter/backup/preview", page(backup_views.schedule_preview), name="backup-schedule-preview"),
]

# Datacenter -> Protection: protection policies and notification targets.
urlpatterns += [
    path("datacenter/protection/", page(protection_views.protection_page), name="protection"),
    path("datacenter/protection/<int:pk>/", page(protection_views.protection_page), name="protection-edit"),
    path("datacenter/protection/save", page(protection_views.policy_save), name="protection-create"),
    path("datacenter/protection/<int:pk>/save", page(protection_views.policy_save), name="protection-save"),
    path("datacenter/protection/<int:pk>/delete", page(protection_views.policy_delete), name="protection-delete"),
    path("datacenter/protection/<int:pk>/run", page(protection_views.policy_run), name="protection-run"),
    path(
        "datacenter/protection/<int:pk>/restore-test",
        page(protection_views.policy_restore_test),
        name="protection-restore-test",
    ),
    path("datacenter/protection/targets/save", page(protection_views.target_save), name="protection-target-save"),
    path(
        "datacenter/protection/targets/<str:name>/delete",
        page(protection_views.target_delete),
        name="protection-target-delete",
    ),
]

# Console recordings: rules, replay and download for auditors, read-only links (these two without login).
urlpatterns += [
    path("datacenter/recordings/", page(rec.recordings_page), name="recordings"),
    path("datacenter/recordings/rules", page(rec.rule_add), name="recording-rule-add"),
    path("datacenter/recordings/rules/<int:pk>/delete", page(rec.rule_delete), name="recording-rule-delete"),
    path("recordings/<str:session>/", page(rec.replay_page), name="recording"),
    path("recordings/<str:session>/cast", page(rec.cast), name="recording-cast"),
    path("recordings/<str:session>/share", page(rec.share), name="recording-share"),
    path("recordings/shares/<int:pk>/revoke", page(rec.revoke), name="recording-revoke"),
    path("shared/recording/<str:token>/", rec.shared_page, name="shared-recording"),
    path("shared/recording/<str:token>/cast", rec.shared_cast, name="shared-cast"),
]
