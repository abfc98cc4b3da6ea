"""The fault suite runs on the storage lab's node (btrfs, raw images, directories, a tiny ext4)."""

from tests.engine.storage_lab import lab, make  # noqa: F401 - fixtures
