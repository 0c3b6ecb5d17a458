"""Refuse webhook URLs that would make the platform call into private networks (SSRF)."""

import ipaddress
import socket
from urllib.parse import urlsplit

from identity.errors import InvalidWebhookUrl

# Names that always mean "this host" or a cloud metadata service, whatever DNS says.
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "metadata.google.internal", "metadata")
_LOCAL_SUFFIXES = (".localhost", ".internal", ".local")
_METADATA_ADDRESSES = {
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("fd00:ec2::254"),
}


def _literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host names literally, legacy IPv4 forms (0x7f.1, 2130706433) included."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def _is_private(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    # Not globally routable covers loopback, private, link-local, shared (100.64/10, where some
    # clouds keep metadata services), documentation and reserved ranges.
    return address in _METADATA_ADDRESSES or not address.is_global or address.is_multicast


def check_webhook_url(url: str, *, allow_private: bool) -> None:
    """Raise InvalidWebhookUrl unless `url` is an http(s) URL to a public host.

    Host names are judged by name, not resolved: resolution belongs to delivery time, where the
    address actually used can be checked.
    """
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError:
        hostname = None
    if hostname is None or parts.scheme not in ("http", "https"):
        raise InvalidWebhookUrl("webhook_url must be an absolute http or https URL", url=url)
    if parts.username or parts.password:
        raise InvalidWebhookUrl("webhook_url must not carry credentials", url=url)
    if allow_private:
        return
    host = hostname.rstrip(".").lower()
    address = _literal_address(host)
    if (address is not None and _is_private(address)) or (
        address is None and (host in _LOCAL_NAMES or host.endswith(_LOCAL_SUFFIXES))
    ):
        raise InvalidWebhookUrl(
            "webhook_url points at a loopback, private, link-local or metadata address",
            url=url,
            host=host,
        )
