"""Every change a user can ask for, checked for permission and validity, then queued as a job: one module per
resource (``containers``, ``pools``, ``nodes``, ``backups``, ``schedules``).

Pages and API views are thin: they parse the request, call one function of
these, and show the job it returns.  ``PermissionDenied`` becomes 403,
``ValidationError`` 400 with field errors, ``JobRefused`` 409 (or 503 for an
offline node).  The permission helpers are ``webui.access``'s.
"""

from webui.access import require  # noqa: F401 - the console views call ``actions.require``
from webui.actions.containers import POWER_ACTIONS, power  # noqa: F401 - and ``actions.power``
