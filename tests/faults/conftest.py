"""The fault suite runs on the storage lab's node (btrfs, raw images, directories, a tiny ext4), and the
services' restarts on the web tier's real processes."""

from tests.engine.storage_lab import lab, make  # noqa: F401 - fixtures
from tests.webui.conftest import make_user, roles, services_env  # noqa: F401 - fixtures
