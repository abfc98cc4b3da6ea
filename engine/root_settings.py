"""Which settings of a container's config only an administrator may make, and why.

One answer for every path that can set them: the web tier checks a request
(create, config edit, clone) with it, and the node checks with it what only
the node can read (a backup archive's config, a snapshot's) before anything
is written.
"""

from __future__ import annotations

from engine.config import ConfigSection

# Raw keys that only shape the container's own PID 1 inside it (Proxmox 9.1 writes them for an OCI image:
# its environment, user, working directory, stop signal): Proxmox treats ``env`` as an ordinary option, and
# none of them reaches past the container's walls, so a tenant's application container keeps them.
INSIDE_ONLY_RAW_KEYS = {
    "lxc.environment.runtime",
    "lxc.init.uid",
    "lxc.init.gid",
    "lxc.init.groups",
    "lxc.init.cwd",
    "lxc.signal.halt",
}

# Features Proxmox lets a non-root user change (with VM.Allocate), and only on an unprivileged container.
TENANT_FEATURES = {"nesting"}


def root_equivalent(section: ConfigSection) -> dict[str, str]:
    """The settings of a config that only an administrator may make, each with the reason.

    Proxmox's rules (``PVE::LXC::check_ct_modify_config_perm`` and the create and restore paths) are the
    floor: a privileged container, a mount point of a host path, a passed-through device (``devN``), a
    hookscript, raw ``lxc.*`` keys, any feature of a privileged container and every feature but nesting
    of an unprivileged one are for root alone,
    because each lets the container's root reach the host (or weakens the walls that stop it).
    The web tier checks a request with this, and the node checks what only it can read (an archive's
    config, a snapshot's) with the same function.
    """
    return {key: reason for key, (_, reason) in _root_settings(section).items()}


def root_equivalent_changes(before: ConfigSection | None, after: ConfigSection) -> dict[str, str]:
    """The root-equivalent settings that differ between two configs (all of ``after``'s for a new container):
    what a change from ``before`` to ``after`` sets, alters or removes that only an administrator may."""
    new = _root_settings(after)
    if before is None:
        return {key: reason for key, (_, reason) in new.items()}
    old = _root_settings(before)
    return {
        key: (new.get(key) or old[key])[1]
        for key in sorted(set(old) | set(new))
        if (new.get(key) or (None,))[0] != (old.get(key) or (None,))[0]
    }


def _root_settings(section: ConfigSection) -> dict[str, tuple[object, str]]:
    """key -> (what exactly is set, why only an administrator may set it)."""
    found: dict[str, tuple[object, str]] = {}
    privileged = section.values.get("unprivileged", "1").strip() == "0"
    if privileged:
        found["unprivileged"] = ("0", "a privileged container (unprivileged: 0): its root is the host's root")
    for key, raw in section.values.items():
        if key.startswith("mp") and key[2:].isdigit():
            volume = str(section.get(key).get("volume", ""))
            if volume.startswith("/"):
                found[key] = (raw, f"a mount point of the host path {volume}")
        elif key.startswith("dev") and key[3:].isdigit():
            found[key] = (raw, f"device passthrough of the host's {section.get(key).get('path')}")
        elif key == "hookscript":
            found[key] = (raw, "a hookscript: a program the node runs as root at each start and stop")
    features = {name: value for name, value in (section.get("features") or {}).items() if value not in (False, "", "0")}
    weakening = {name: value for name, value in features.items() if privileged or name not in TENANT_FEATURES}
    if weakening:
        found["features"] = (
            sorted(weakening.items()),
            f"feature(s) {', '.join(sorted(weakening))} "
            + ("of a privileged container" if privileged else "weaken the container's isolation"),
        )
    for key in sorted({k for k, _ in section.raw} - INSIDE_ONLY_RAW_KEYS):
        found[key] = (section.raw_values(key), f"the raw LXC key {key}")
    return found


def section_of(values: dict[str, str], raw: list[tuple[str, str]] | None = None) -> ConfigSection:
    """A config section from plain ``key -> value`` pairs, each checked as ``set`` checks it."""
    section = ConfigSection(raw=list(raw or []))
    for key, value in values.items():
        section.set(key, value)
    return section
