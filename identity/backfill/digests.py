"""What a users or agents row remembers of the backfill line that last wrote it (`line_digest`),
so that the same line sent again can be recognised without being read (known.py)."""

import hashlib
import importlib.metadata
import platform

import xxhash

RULES = b"3"  # bump when validation or the digest changes what a line means

# What a line's verdict also depends on, besides its bytes and the setting: the libraries that
# validate it and Python's own (`ipaddress` judges webhook hosts); an upgrade that changes how an
# email is normalised or which webhook host passes must not leave rows known.
VALIDATORS = ("pydantic", "pydantic-core", "email-validator", "idna", "msgspec")


def _seeds() -> dict[bool, int]:
    """The digest's seed for each value of the private webhooks setting."""
    versions = ",".join(
        [f"python={platform.python_version()}"]
        + [f"{name}={_version(name)}" for name in VALIDATORS]
    ).encode()
    return {
        allow: int.from_bytes(
            hashlib.blake2b(
                b"lines-" + RULES + (b"-private" if allow else b"") + b"-" + versions,
                digest_size=8,
            ).digest()
        )
        for allow in (False, True)
    }


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "none"


SEEDS = _seeds()


# A line's digest is XXH3's 128 bits over the line and the key it wrote, seeded as above. The key
# is in it because a lookup finds the row through the key its pattern took from the line, and an
# agent's through its user's slug, which may move: a line whose key text misleads the pattern (an
# escaped "key" beside a plain one in metadata) must not find the row its real key wrote, should
# its user take that other slug later. Not a cryptographic hash, and it need not be: the lookups
# find only rows the run's writer may write (an agent's user's owner), so lines made to collide
# could only make a writer's own change count as unchanged, which not sending it does as well.
# About eight times faster than BLAKE2b on a line of 200 bytes, and every line of an upload that
# reads known lines is digested.
def line_digest(raw: bytes, key: str, *, allow_private_webhooks: bool) -> str:
    """What a row remembers of the line that wrote it as `key` (a ledger key), in hex."""
    named = raw + b"\n" + name_of(key)
    return xxhash.xxh3_128_hexdigest(named, SEEDS[allow_private_webhooks])


def name_of(key: str) -> bytes:
    """A ledger key ("agent:bot@govind") as a digest covers it, and a lookup names it
    (b"bot@govind")."""
    return key.partition(":")[2].encode()
