"""Organizations and API keys: keys are random, shown once, stored only as a SHA-256 digest."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta

from credits_graphql.domain.access import Principal, Role
from credits_graphql.domain.ledger import Account
from credits_graphql.service.deps import Deps
from credits_graphql.service.key_reads import KeyReads, read_key
from credits_graphql.service.transient import StoreUnavailable, retry_on_conflict
from credits_graphql.service.unit_of_work import ApiKey, Organization

log = logging.getLogger(__name__)

KEY_PREFIX = "cgk_"
MAX_ORG_NAME = 200  # the column's length
# last_used_at is a hint for operators; writing it on every request would make each read a write.
TOUCH_INTERVAL = timedelta(minutes=1)


class UnknownOrganization(LookupError):
    pass


class InvalidExpiry(ValueError):
    pass


class InvalidOrganizationName(ValueError):
    pass


def hash_key(secret: str) -> str:
    # A 256-bit random key needs no slow hash: a digest is enough that a database leak reveals no key.
    return hashlib.sha256(secret.encode()).hexdigest()


def organization_name(text: str) -> str:
    """The name an organization is stored with: `text` stripped, of 1 to MAX_ORG_NAME characters and no NUL."""
    name = text.strip()
    if not name or len(name) > MAX_ORG_NAME or "\x00" in name:
        raise InvalidOrganizationName(f"an organization's name has 1 to {MAX_ORG_NAME} characters, not blank; "
                                      f"got {text[:40]!r}")
    return name


async def create_organization(deps: Deps, name: str) -> Organization:
    name = organization_name(name)
    async with deps.uow(write=True) as uow:
        org = await uow.organizations.add(name, deps.clock())
        await uow.commit()
    return org


async def count_organizations(deps: Deps) -> int:
    async with deps.uow() as uow:
        return await uow.organizations.count()


async def create_api_key(deps: Deps, org_id: int, role: Role,
                         expires_at: datetime | None = None) -> tuple[ApiKey, str]:
    """Returns the stored key and its secret, which is not kept and cannot be shown again.

    A key with `expires_at` stops working at that instant, on every process."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    now = deps.clock()
    if expires_at is not None and expires_at <= now:
        raise InvalidExpiry(f"the expiry {expires_at.isoformat()} is not in the future")
    async with deps.uow(write=True) as uow:
        if await uow.organizations.get(org_id) is None:
            raise UnknownOrganization(f"no organization with id {org_id}")
        key = await uow.api_keys.add(org_id, role, hash_key(secret), secret[:10], now, expires_at)
        await uow.commit()
    return key, secret


async def list_api_keys(deps: Deps, org_id: int) -> Sequence[ApiKey]:
    async with deps.uow() as uow:
        if await uow.organizations.get(org_id) is None:
            raise UnknownOrganization(f"no organization with id {org_id}")
        return await uow.api_keys.list(org_id)


async def revoke_api_key(deps: Deps, key_id: int) -> bool:
    async with deps.uow(write=True) as uow:
        revoked = await uow.api_keys.revoke(key_id, deps.clock())
        await uow.commit()
    return revoked


async def authenticate(deps: Deps, secret: str) -> Principal | None:
    """The principal of a live key, or None for a missing, unknown, revoked or expired one.

    Read from the database on every request (no cache), so a revocation or an expiry holds at once on
    every process."""
    principal, _ = await authenticate_reading(deps, secret, None)
    return principal


@retry_on_conflict
async def authenticate_reading(deps: Deps, secret: str, account_id: int | None,
                               key_reads: KeyReads | None = None) -> tuple[Principal | None, Account | None]:
    """`authenticate`, and the account with `account_id` when the key is live and its organization has one, read
    with the key: a request that reads an account first (most reads do) makes one read of the two. `key_reads`:
    the process's, to read together with the keys of other requests in flight (service/key_reads.py)."""
    if not secret.startswith(KEY_PREFIX) or len(secret) > 100:
        return None, None
    now = deps.clock()
    digest = hash_key(secret)
    found = await (key_reads.read(deps, digest, account_id) if key_reads is not None
                   else read_key(deps, digest, account_id))
    key, account = found or (None, None)
    # The lookup is by digest; the comparison of the secret's digest itself is constant-time.
    if key is None or not hmac.compare_digest(key.key_hash, digest) or not key.is_live(now):
        return None, None
    if key.last_used_at is None or now - key.last_used_at > TOUCH_INTERVAL:
        await _touch(deps, key.id, now, key_reads)
    return Principal(key_id=key.id, org_id=key.org_id, role=key.role), account


async def _touch(deps: Deps, key_id: int, now: datetime, key_reads: KeyReads | None) -> None:
    """Records when the key was last used: a hint for operators, which a database that takes no writes now (read-only
    after a failover, busy) goes without; the request is served all the same, and the process (`key_reads`) does
    not ask again for a while."""
    if key_reads is not None and not key_reads.may_touch(key_id, now, TOUCH_INTERVAL):
        return
    try:
        async with deps.uow(write=True) as uow:
            await uow.api_keys.touch(key_id, now)
            await uow.commit()
    except StoreUnavailable as refused:
        log.warning("API key %s: its last use was not recorded: %s", key_id, refused)
        if key_reads is not None:
            key_reads.touch_refused(key_id, now)
