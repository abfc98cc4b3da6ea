"""Pools: create, delete, and moving a container in or out (Pool.Allocate on each side)."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from webui.access import Access, audit, require
from webui.models import Container, Pool


def create_pool(access: Access, name: str, comment: str = "", address: str | None = None) -> Pool:
    require(access, "Pool.Allocate", path="/", address=address)
    pool = Pool(name=name, comment=comment)
    pool.full_clean()
    with transaction.atomic():  # the pool and its audit row, or neither (a server killed in between)
        pool.save()
        audit(access, "pool.create", pool.path, address, comment=comment)
    return pool


def delete_pool(access: Access, pool: Pool, address: str | None = None) -> None:
    """Only an empty pool goes: its containers would silently lose the access granted through it."""
    require(access, "Pool.Allocate", pool, address=address)
    count = pool.containers.count()
    if count:
        raise ValidationError({"pool": [f"pool '{pool.name}' still holds {count} container(s); move them out first"]})
    path = pool.path
    with transaction.atomic():
        pool.delete()
        audit(access, "pool.delete", path, address)


def set_pool(access: Access, container: Container, pool: Pool | None, address: str | None = None) -> None:
    """Move a container into ``pool`` (or out of its pool): VM.Allocate on the container (a pool's grants
    would reach it: seeing it is not enough), and Pool.Allocate on the pools it leaves and joins."""
    require(access, "VM.Allocate", container, address=address)
    for side in {p for p in (container.pool, pool) if p is not None}:
        require(access, "Pool.Allocate", side, address=address)
    container.pool = pool
    container.save(update_fields=["pool"])
    audit(access, "pool.set", container.path, address, pool=pool.name if pool else None)
