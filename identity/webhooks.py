"""Refuse webhook URLs that would make the platform call into private networks (SSRF).

The URL is read the way an HTTP client will read it before it is judged: the host
percent-decoded, mapped by IDNA (UTS 46: full-width digits, ideographic dots and circled letters
become ASCII), legacy IPv4 forms (0x7f.1, 2130706433) and IPv6 forms that carry an IPv4 address
(mapped, compatible, NAT64, 6to4) unwrapped. What the check cannot know: host names are judged by
name, not resolved, so a public name whose DNS points at a private address passes here. Whoever
delivers to these URLs must check the address it actually connects to (docs/api.md).
"""

import ipaddress
import socket
from urllib.parse import unquote, urlsplit

import idna

from identity.errors import InvalidWebhookUrl

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Names that always mean "this host" or a cloud metadata service, whatever DNS says.
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "metadata.google.internal", "metadata")
_LOCAL_SUFFIXES = (".localhost", ".internal", ".local")
_METADATA_ADDRESSES = {
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("fd00:ec2::254"),
}
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: the last 32 bits are an IPv4 address
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215: never global


def _literal_address(host: str) -> Address | None:
    """The address a host names literally, legacy IPv4 forms (0x7f.1, 2130706433) included."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries and routes to, if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    as_int = int(address)
    if address in _NAT64 or 1 < as_int < 2**32:  # NAT64, or IPv4-compatible (::a.b.c.d)
        return ipaddress.IPv4Address(as_int & 0xFFFFFFFF)
    return None


def _is_private(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        if address in _LOCAL_NAT64:
            return True
        embedded = _embedded_ipv4(address)
        if embedded is not None and _is_private(embedded):
            return True
    # Not globally routable covers loopback, private, link-local, shared (100.64/10, where some
    # clouds keep metadata services), documentation and reserved ranges.
    return address in _METADATA_ADDRESSES or not address.is_global or address.is_multicast


def _normalised_host(raw: str) -> str | None:
    """The host as an HTTP client will look it up, or None if no client could."""
    host = unquote(raw)
    if host.startswith("["):
        return host.lower()
    try:
        mapped = idna.uts46_remap(host, std3_rules=False, transitional=False)
    except idna.IDNAError:
        return None
    mapped = mapped.rstrip(".")
    if mapped.isascii():
        return mapped.lower()
    try:
        return idna.encode(mapped, uts46=True).decode("ascii").lower()
    except idna.IDNAError:
        return None


def check_webhook_url(url: str, *, allow_private: bool) -> None:
    """Raise InvalidWebhookUrl unless `url` is an http(s) URL to a public host."""
    try:
        parts = urlsplit(url)
        hostname, _ = parts.hostname, parts.port  # .port refuses a port above 65535
    except ValueError:
        raise InvalidWebhookUrl(
            "webhook_url must be an absolute http or https URL with a valid port", url=url
        ) from None
    if hostname is None or parts.scheme not in ("http", "https"):
        raise InvalidWebhookUrl("webhook_url must be an absolute http or https URL", url=url)
    if parts.username or parts.password:
        raise InvalidWebhookUrl("webhook_url must not carry credentials", url=url)
    if allow_private:
        return
    host = _normalised_host(hostname)
    if host is None:
        raise InvalidWebhookUrl("webhook_url has a host name no client can look up", url=url)
    address = _literal_address(host)
    if (address is not None and _is_private(address)) or (
        address is None and (host in _LOCAL_NAMES or host.endswith(_LOCAL_SUFFIXES))
    ):
        raise InvalidWebhookUrl(
            "webhook_url points at a loopback, private, link-local or metadata address",
            url=url,
            host=host,
        )
