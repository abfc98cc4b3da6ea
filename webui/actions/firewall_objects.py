"""The firewall's named objects, one at a time, as Proxmox's API edits them: aliases and IP sets (datacenter
and container levels) and security groups with their rules (datacenter).  Each change reads the level's file
from the mirror, changes the one object with the file's own checks, and saves it like any other change
(``webui.actions.firewall.save``: rights, the whole file checked, one job per node)."""

from __future__ import annotations

from django.core.exceptions import ValidationError

from engine.network import fwconfig
from webui.access import Access
from webui.actions.firewall import Scope, config_of, rule_from, save
from webui.models import FirewallFile, Job


def _name(value, key: str, limit: int) -> str:
    if not isinstance(value, str) or not fwconfig.NAME.match(value) or len(value) > limit:
        raise ValidationError({key: [f"a letter, then letters, digits, '-' and '_' ({limit} at most)"]})
    return value


def _check(func, key: str, *args):
    try:
        return func(*args)
    except ValueError as exc:
        raise ValidationError({key: [exc.args[-1]]}) from None


def _levels(scope: Scope, *allowed: str) -> None:
    if scope.level not in allowed:
        raise ValidationError({"level": [f"only at the {' and '.join(allowed)} level(s)"]})


def _comment(value) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str) or "\n" in value or "#" in value:
        raise ValidationError({"comment": ["one line of text without '#'"]})
    return value.strip() or None


def _note(notes: dict[str, str], name: str, comment: str | None) -> None:
    if comment is None:
        notes.pop(name, None)
    else:
        notes[name] = comment


def set_alias(access: Access, scope: Scope, data: dict, address: str | None = None) -> list[Job]:
    _levels(scope, "cluster", "ct")
    name = _name(data.get("name"), "name", fwconfig.ALIAS_MAX)
    cidr = _check(fwconfig.ip_or_cidr, "cidr", str(data.get("cidr", "")), "cidr")
    conf = config_of(scope)
    conf.aliases[name.lower()] = (name, cidr, _comment(data.get("comment")))
    return save(access, scope, fwconfig.render(conf), address)


def delete_alias(access: Access, scope: Scope, name: str, address: str | None = None) -> list[Job]:
    conf = config_of(scope)
    if conf.aliases.pop(name.lower(), None) is None:
        raise ValidationError({"name": [f"no alias '{name}'"]})
    return save(access, scope, fwconfig.render(conf), address)


def set_ipset(access: Access, scope: Scope, data: dict, address: str | None = None) -> list[Job]:
    """Create an IP set (``name``, ``comment``), or add an entry to one (``name``, ``cidr``, ``nomatch``)."""
    _levels(scope, "cluster", "ct")
    name = _name(data.get("name"), "name", fwconfig.SET_MAX).lower()
    conf = config_of(scope)
    if data.get("cidr") in (None, ""):
        conf.ipsets.setdefault(name, [])
        _note(conf.ipset_comments, name, _comment(data.get("comment")))
    else:
        if name not in conf.ipsets:
            raise ValidationError({"name": [f"no IP set '{name}'"]})
        nomatch = data.get("nomatch", False)
        if not isinstance(nomatch, bool):
            raise ValidationError({"nomatch": ["true or false"]})
        line = ("!" if nomatch else "") + str(data["cidr"])
        entry = _check(fwconfig._ipset_entry, "cidr", line, [e[1] for e in conf.ipsets[name]])  # noqa: SLF001
        conf.ipsets[name].append((entry[0], entry[1], _comment(data.get("comment"))))
    return save(access, scope, fwconfig.render(conf), address)


def delete_ipset(access: Access, scope: Scope, name: str, cidr: str | None, address: str | None = None) -> list[Job]:
    """The whole set (``cidr`` None), or one of its entries."""
    conf = config_of(scope)
    if name.lower() not in conf.ipsets:
        raise ValidationError({"name": [f"no IP set '{name}'"]})
    if cidr is None:
        del conf.ipsets[name.lower()]
        conf.ipset_comments.pop(name.lower(), None)
    else:
        kept = [e for e in conf.ipsets[name.lower()] if e[1] != cidr]
        if len(kept) == len(conf.ipsets[name.lower()]):
            raise ValidationError({"cidr": [f"no entry '{cidr}' in IP set '{name}'"]})
        conf.ipsets[name.lower()] = kept
    return save(access, scope, fwconfig.render(conf), address)


def set_group(access: Access, scope: Scope, data: dict, address: str | None = None) -> list[Job]:
    """Create a security group (``group``, ``comment``), or add a rule to one (``group`` and the rule's fields,
    ``pos`` optional)."""
    _levels(scope, "cluster")
    group = _name(data.get("group"), "group", fwconfig.GROUP_MAX).lower()
    conf = config_of(scope)
    if "type" not in data:
        conf.groups.setdefault(group, [])
        _note(conf.group_comments, group, _comment(data.get("comment")))
    else:
        if group not in conf.groups:
            raise ValidationError({"group": [f"no security group '{group}'"]})
        rule = rule_from({k: v for k, v in data.items() if k != "group"}, "group")
        pos = data.get("pos")
        rules = conf.groups[group]
        if pos is not None and (isinstance(pos, bool) or not isinstance(pos, int) or not 0 <= pos <= len(rules)):
            raise ValidationError({"pos": [f"a position from 0 to {len(rules)}"]})
        rules.insert(len(rules) if pos is None else pos, rule)
    return save(access, scope, fwconfig.render(conf), address)


def delete_group(access: Access, scope: Scope, group: str, pos: int | None, address: str | None = None) -> list[Job]:
    """The whole group (``pos`` None; refused while a rule names it), or its rule at ``pos``."""
    conf = config_of(scope)
    group = group.lower()
    if group not in conf.groups:
        raise ValidationError({"group": [f"no security group '{group}'"]})
    if pos is None:
        users = _group_users(group)
        if users:
            raise ValidationError({"group": [f"security group '{group}' is used by {', '.join(users)}"]})
        del conf.groups[group]
        conf.group_comments.pop(group, None)
    elif not 0 <= pos < len(conf.groups[group]):
        raise ValidationError({"pos": [f"no rule at position {pos} of group '{group}'"]})
    else:
        del conf.groups[group][pos]
    return save(access, scope, fwconfig.render(conf), address)


def _group_users(group: str) -> list[str]:
    """The mirrored firewall files with a ``GROUP <group>`` rule (as Proxmox refuses to delete a group in use)."""
    users = set()
    for row in FirewallFile.objects.all():
        kind = {"cluster.fw": "cluster", "host.fw": "host"}.get(row.name, "ct")
        rules = fwconfig.parse(row.text, kind, strict=False).rules
        if any(r.type == "group" and r.action == group for r in rules):
            users.add(row.name)
    return sorted(users)
