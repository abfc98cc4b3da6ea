"""The create wizard's steps in Proxmox's order, each a form that validates on the server.

The API's create endpoint runs the same forms over one JSON body, so a field
is checked the same way wherever it comes from.  Values are checked with the
engine's own config parser (pure Python, no kernel): what passes here is what
the node accepts.
"""

from __future__ import annotations

import ipaddress

from django import forms
from django.core.exceptions import ValidationError

from engine.config import BOUNDS, ContainerConfig, check_hostname
from engine.errors import ValidationError as EngineValidationError
from engine.network.nics import parse_nic
from webui.models import Container, Node, StorageMirror, StoredTemplate
from webui.models.inventory import CTID_MIN


def bounded(kind, key: str, **kwargs):
    """A number field whose range is the engine's for ``key`` (``engine.config.BOUNDS``), never restated here."""
    low, high = BOUNDS[key]
    return kind(min_value=low, max_value=high, **kwargs)


def propose_ctid() -> int:
    """The lowest free ID from 100, as Proxmox's wizard proposes."""
    used = set(Container.objects.filter(ctid__lt=CTID_MIN + 100_000).values_list("ctid", flat=True))
    ctid = CTID_MIN
    while ctid in used:
        ctid += 1
    return ctid


class GeneralForm(forms.Form):
    node = forms.ModelChoiceField(
        queryset=Node.objects.all(), to_field_name="name", error_messages={"invalid_choice": "no such node"}
    )
    ctid = bounded(forms.IntegerField, "ctid", label="CT ID")
    hostname = forms.CharField(max_length=253)
    password = forms.CharField(required=False, widget=forms.PasswordInput(render_value=True), max_length=1024)
    password_confirm = forms.CharField(
        required=False, widget=forms.PasswordInput(render_value=True), label="Confirm password"
    )
    ssh_public_keys = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}), label="SSH public keys")
    unprivileged = forms.BooleanField(required=False, initial=True, label="Unprivileged container")
    nesting = forms.BooleanField(
        required=False,
        initial=True,
        help_text="lets the container run containers of its own (crun, LXC, Docker): features: nesting=1; "
        "unprivileged containers only",
    )
    isolated_idmap = forms.BooleanField(
        required=False,
        initial=False,
        label="Isolated ID range",
        help_text="the container's users are 65536 host ids no other container has (LXD's isolated idmap), so its "
        "root is not another container's; for unprivileged containers",
    )

    def clean_node(self):
        node = self.cleaned_data["node"]
        if not node.online:
            raise ValidationError(f"node '{node.name}' is offline; pick another node or start its agent")
        return node

    def clean_ctid(self):
        ctid = self.cleaned_data["ctid"]
        if Container.objects.filter(ctid=ctid).exists():
            raise ValidationError(f"ID {ctid} is already in use (the next free one is {propose_ctid()})")
        return ctid

    def clean_hostname(self):
        try:
            return check_hostname(self.cleaned_data["hostname"])
        except EngineValidationError as exc:
            raise ValidationError(str(exc).removeprefix("hostname: ")) from None

    user_data = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        label="cloud-init user data",
        help_text="#cloud-config ... for a template that carries cloud-init (NoCloud seed, applied at first boot)",
    )
    firstboot = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        label="First-boot script",
        help_text="#!/bin/sh ... run once inside at the first start (for templates without cloud-init)",
    )

    def clean_ssh_public_keys(self):
        text = self.cleaned_data["ssh_public_keys"]
        if text.strip():
            from engine.credentials import validate_ssh_keys

            try:
                validate_ssh_keys(text)
            except EngineValidationError as exc:
                raise ValidationError(str(exc).removeprefix("ssh-public-keys: ")) from None
        return text

    def clean(self):
        data = super().clean()
        password, confirm = data.get("password") or "", data.get("password_confirm") or ""
        if password != confirm:
            self.add_error("password_confirm", "the passwords do not match")
        if password and len(password) < 5:
            self.add_error("password", "at least 5 characters")
        if data.get("isolated_idmap") and not data.get("unprivileged"):
            self.add_error(
                "isolated_idmap",
                "only an unprivileged container has an ID range (a privileged one uses the host's ids)",
            )
        if data.get("nesting") and not data.get("unprivileged"):
            self.add_error("nesting", "nesting needs an unprivileged container")
        for key in ("user_data", "firstboot"):
            try:
                from engine.provision import Provisioning

                Provisioning.from_dict({key: data.get(key)})
            except EngineValidationError as exc:
                self.add_error(key, str(exc))
        if not password and not (data.get("ssh_public_keys") or "").strip():
            self.add_error("password", "give a password or SSH public keys, or you cannot log in")
        return data


class TemplateForm(forms.Form):
    template = forms.CharField(max_length=300, help_text="local:vztmpl/<name> from the node's template store")

    def check_on(self, node: Node | None) -> None:
        volid = self.cleaned_data.get("template", "")
        if node is None or not volid:
            return
        name = volid.removeprefix("local:vztmpl/")
        if not StoredTemplate.objects.filter(node=node, name=name).exists():
            self.add_error(
                "template",
                f"template '{name}' is not in the store of node '{node.name}' "
                "(it may have been removed; pick another or download it)",
            )


class DiskForm(forms.Form):
    storage = forms.CharField(max_length=64, initial="local")
    disk_size = forms.IntegerField(
        label="Disk size (GiB)",
        min_value=0,
        max_value=131072,
        required=False,
        help_text="0: no size (a directory volume); empty: 8",
    )

    def check_on(self, node: Node | None) -> None:
        """No size where the node's storage cannot enforce one (refused if given); else 8 GiB unless given."""
        name, size = self.cleaned_data.get("storage"), self.cleaned_data.get("disk_size")
        mirror = StorageMirror.objects.filter(node=node, name=name).first() if node and name else None
        reported = list(StorageMirror.objects.filter(node=node)) if node and name else []
        usable = [m.name for m in reported if m.enabled and "rootdir" in m.content]
        if reported and name not in usable:  # before the node's first report, its own job decides
            self.add_error(
                "storage",
                f"storage '{name}' is not a container storage of node '{node.name}' "
                f"(usable: {', '.join(usable) or 'none'})",
            )
            return
        if mirror is not None and not mirror.enforces_size:
            if size:
                self.add_error(
                    "disk_size",
                    f"storage '{name}' ({mirror.type}) cannot enforce a size: give none "
                    "(or 0), or pick a storage that can",
                )
            self.cleaned_data["disk_size"] = 0
        elif size is None:
            self.cleaned_data["disk_size"] = 8


class CpuForm(forms.Form):
    cores = bounded(forms.IntegerField, "cores", required=False, help_text="empty: all the node's cores")
    cpulimit = bounded(forms.FloatField, "cpulimit", required=False, initial=0, help_text="0: no limit")
    cpuunits = bounded(forms.IntegerField, "cpuunits", initial=100)


class MemoryForm(forms.Form):
    memory = bounded(forms.IntegerField, "memory", label="Memory (MiB)", initial=512)
    swap = bounded(forms.IntegerField, "swap", label="Swap (MiB)", initial=512)


IPV4_MODES = [("none", "none"), ("static", "static"), ("dhcp", "DHCP")]
IPV6_MODES = [("none", "none"), ("static", "static"), ("auto", "SLAAC"), ("dhcp", "DHCP")]


class NetworkForm(forms.Form):
    bridge = forms.CharField(max_length=15, required=False, help_text="empty: no network interface")
    ipv4_mode = forms.ChoiceField(choices=IPV4_MODES, initial="dhcp", label="IPv4")
    ipv4 = forms.CharField(required=False, label="IPv4/CIDR")
    gw = forms.CharField(required=False, label="Gateway (IPv4)")
    ipv6_mode = forms.ChoiceField(choices=IPV6_MODES, initial="none", label="IPv6")
    ipv6 = forms.CharField(required=False, label="IPv6/CIDR")
    gw6 = forms.CharField(required=False, label="Gateway (IPv6)")
    tag = bounded(forms.IntegerField, "tag", required=False, label="VLAN tag")
    rate = forms.FloatField(min_value=0, max_value=4095, required=False, label="Rate limit (MB/s)")
    firewall = forms.BooleanField(required=False, initial=True)

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        if not data.get("bridge"):
            return data
        if data["ipv4_mode"] == "static" and not data.get("ipv4"):
            self.add_error("ipv4", "give an address in CIDR form, e.g. 10.0.0.5/24")
        if data["ipv6_mode"] == "static" and not data.get("ipv6"):
            self.add_error("ipv6", "give an address in CIDR form, e.g. fd00::5/64")
        if not self.errors:
            try:
                parse_nic(0, self.net0())
            except EngineValidationError as exc:
                field = {
                    "ip": "ipv4",
                    "ip6": "ipv6",
                    "gw": "gw",
                    "gw6": "gw6",
                    "bridge": "bridge",
                    "rate": "rate",
                    "tag": "tag",
                }.get(_property_of(str(exc)), None)
                self.add_error(field, str(exc).removeprefix("net0: "))
        return data

    def check_on(self, node: Node | None) -> None:
        """Only a bridge a NIC may use on that node (managed there, or allowed by an administrator)."""
        from webui.nic_rights import usable_bridges

        bridge = self.cleaned_data.get("bridge")
        if node is not None and bridge and bridge not in usable_bridges(node):
            usable = ", ".join(usable_bridges(node)) or "none"
            self.add_error(
                "bridge", f"bridge '{bridge}' is not one a container may use on node '{node.name}' (usable: {usable})"
            )

    def net0(self) -> str:
        data = self.cleaned_data
        props = {"name": "eth0", "bridge": data["bridge"]}
        props["ip"] = {"static": data.get("ipv4"), "dhcp": "dhcp"}.get(data["ipv4_mode"])
        if data["ipv4_mode"] == "static" and data.get("gw"):
            props["gw"] = data["gw"]
        props["ip6"] = {"static": data.get("ipv6"), "dhcp": "dhcp", "auto": "auto"}.get(data["ipv6_mode"])
        if data["ipv6_mode"] == "static" and data.get("gw6"):
            props["gw6"] = data["gw6"]
        props["tag"] = data.get("tag")
        props["rate"] = data.get("rate") or None
        props["firewall"] = "1" if data.get("firewall") else None
        return ",".join(f"{k}={v}" for k, v in props.items() if v not in (None, ""))


def _property_of(message: str) -> str | None:
    for prop in ("gw6", "gw", "ip6", "ip", "bridge", "rate", "tag"):
        if f"'{prop}'" in message or f" {prop}:" in message or f"{prop}=" in message or f".{prop}" in message:
            return prop
    return None


class DnsForm(forms.Form):
    searchdomain = forms.CharField(required=False, max_length=253, label="DNS domain")
    nameserver = forms.CharField(
        required=False,
        max_length=255,
        label="DNS servers",
        help_text="space-separated addresses; empty: use the host's",
    )

    def clean_nameserver(self):
        value = self.cleaned_data["nameserver"].strip()
        for address in value.split():
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ValidationError(f"'{address}' is not an IP address") from None
        return value

    def clean_searchdomain(self):
        value = self.cleaned_data["searchdomain"].strip()
        for label in value.split(".") if value else []:
            try:
                check_hostname(label)
            except EngineValidationError:
                raise ValidationError(f"'{value}' is not a domain name") from None
        return value


class ConfirmForm(forms.Form):
    start = forms.BooleanField(required=False, label="Start after created")


STEPS = [
    ("general", "General", GeneralForm),
    ("template", "Template", TemplateForm),
    ("disk", "Root disk", DiskForm),
    ("cpu", "CPU", CpuForm),
    ("memory", "Memory", MemoryForm),
    ("network", "Network", NetworkForm),
    ("dns", "DNS", DnsForm),
    ("confirm", "Confirm", ConfirmForm),
]
STEP_FORMS = {name: form for name, _, form in STEPS}


class CreateRequest:
    """All steps over one set of data: valid when every step is, plus the checks that span steps.

    ``extra``: further config keys in pct syntax (``onboot``, ``tags``...; Proxmox's create takes any), checked
    with the rest by the engine's parser and merged over what the steps make."""

    def __init__(self, data, extra: dict[str, str] | None = None):
        self.forms = {name: form(data) for name, form in STEP_FORMS.items()}
        self.extra = dict(extra or {})
        self.errors: dict[str, list[str]] = {}

    def is_valid(self) -> bool:
        for form in self.forms.values():
            form.is_valid()
        general, template = self.forms["general"], self.forms["template"]
        if template.is_valid():
            template.check_on(general.cleaned_data.get("node"))
        if self.forms["network"].is_valid():
            self.forms["network"].check_on(general.cleaned_data.get("node"))
        if self.forms["disk"].is_valid():
            self.forms["disk"].check_on(general.cleaned_data.get("node"))
        self.errors = {}
        for form in self.forms.values():
            for field, messages in form.errors.items():
                self.errors.setdefault(field, []).extend(messages)
        if not self.errors:
            try:
                config = ContainerConfig(self.ctid)
                for key, value in self.options().items():
                    config.set(key, value)
            except EngineValidationError as exc:
                self.errors.setdefault(exc.key or "__all__", []).append(str(exc))
        return not self.errors

    def data(self, step: str) -> dict:
        return self.forms[step].cleaned_data

    @property
    def node(self) -> Node:
        return self.data("general")["node"]

    @property
    def ctid(self) -> int:
        return self.data("general")["ctid"]

    def options(self) -> dict[str, str]:
        """The container's config keys in pct syntax."""
        general, cpu, memory = self.data("general"), self.data("cpu"), self.data("memory")
        options = {
            "hostname": general["hostname"],
            "unprivileged": "1" if general["unprivileged"] else "0",
            "memory": str(memory["memory"]),
            "swap": str(memory["swap"]),
            "cpuunits": str(cpu["cpuunits"]),
        }
        if general["nesting"]:
            options["features"] = "nesting=1"
        if cpu.get("cores"):
            options["cores"] = str(cpu["cores"])
        if cpu.get("cpulimit"):
            options["cpulimit"] = f"{cpu['cpulimit']:g}"
        network = self.forms["network"]
        if network.cleaned_data.get("bridge"):
            options["net0"] = network.net0()
        dns = self.data("dns")
        for key in ("nameserver", "searchdomain"):
            if dns.get(key):
                options[key] = dns[key]
        return {**options, **self.extra}

    @property
    def has_password(self) -> bool:
        return bool(self.data("general").get("password"))

    def job_params(self) -> dict:
        """What the node needs (``submit`` turns the password into its hash before anything is stored)."""
        general, disk = self.data("general"), self.data("disk")
        return {
            "template": self.data("template")["template"],
            "options": self.options(),
            "rootfs": f"{disk['storage']}:{disk['disk_size']}",
            "password": general.get("password") or None,
            "ssh_public_keys": general.get("ssh_public_keys") or None,
            "start": self.data("confirm")["start"],
            "isolated_idmap": bool(general.get("isolated_idmap")),
            "provision": {k: general[k] for k in ("user_data", "firstboot") if general.get(k)} or None,
        }
