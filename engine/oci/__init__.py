"""OCI images: pulled from registries into the template store as OCI archives (the format Proxmox VE
keeps: ``<name>.tar`` made by ``skopeo copy docker://... oci-archive:...``), unpacked into a container's
rootfs layer by layer, and their config mapped onto the container's (``entrypoint``, ``env``, ...).

``archive`` reads an archive in place, digests checked; ``layers`` applies the layers safely;
``imageconfig`` maps the image config to pct keys as Proxmox does; ``launch`` is what the start of an
application container needs; ``reference``, ``registry`` and ``pull`` drive skopeo.
"""
