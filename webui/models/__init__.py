"""The web tier's database: a mirror of the nodes' state plus what only the datacenter knows.

Nodes own the truth about containers (their config files, cgroups and
storage); ``Container``, ``StoredTemplate`` and ``CatalogEntry`` rows are
mirrors a node agent refreshes after every job and on a timer.  Jobs, access
control, audit and metrics history exist only here.
"""

from webui.models.access import AccessEntry, ApiToken, AuditEntry, Role
from webui.models.console import ConsoleTicket
from webui.models.inventory import CatalogEntry, Container, Node, Pool, StorageMirror, StoredTemplate
from webui.models.jobs import Job, JobLine
from webui.models.metrics import MetricSample
from webui.models.recordings import ConsoleRecording, RecordingRule, RecordingShare

__all__ = [
    "AccessEntry",
    "ApiToken",
    "AuditEntry",
    "CatalogEntry",
    "ConsoleRecording",
    "ConsoleTicket",
    "Container",
    "Job",
    "JobLine",
    "MetricSample",
    "Node",
    "Pool",
    "RecordingRule",
    "RecordingShare",
    "Role",
    "StorageMirror",
    "StoredTemplate",
]
from webui.models.backups import BackupArchive, BackupSchedule  # noqa: E402 - backups, after the models they use

__all__ += ["BackupArchive", "BackupSchedule"]
from webui.models.templates import TemplateSource  # noqa: E402 - after the node it belongs to

__all__ += ["TemplateSource"]
from webui.models.protection import NotificationTarget, ProtectionPolicy  # noqa: E402 - after backup jobs

__all__ += ["NotificationTarget", "ProtectionPolicy"]
from webui.models.protection import RestoreTest  # noqa: E402

__all__ += ["RestoreTest"]
from webui.models.firewall import FirewallFile  # noqa: E402 - after the node it belongs to

__all__ += ["FirewallFile"]
from webui.models.cluster import JoinToken  # noqa: E402 - after the node it makes

__all__ += ["JoinToken"]
