"""The webhook rule: URLs are read as an HTTP client reads them, then judged."""

import pytest

from identity.errors import InvalidWebhookUrl
from identity.webhooks import check_webhook_url


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/a",
        "http://93.184.215.14:8080/x",
        "https://[2606:2800:21f:cb07::1]/x",
        "http://[64:ff9b::808:808]/x",  # NAT64 of a public address
        "http://[2002:808:808::]/x",  # 6to4 of a public address
        "https://b\u00fccher.example/x",  # an internationalised name
        "http://hooks.example.com:65535/x",
    ],
)
def test_public_webhooks_pass(url: str) -> None:
    check_webhook_url(url, allow_private=False)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://10.0.0.1/",
        "http://[fe80::1]/",
        "http://017700000001/",
        "http://[::127.0.0.1]/",
        "http://[::ffff:10.0.0.1]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[64:ff9b:1::808:808]/",
        "http://[2002:7f00:1::]/",
        "http://\uff11\uff12\uff17\uff0e\uff10\uff0e\uff10\uff0e\uff11/",
        "http://127\u30020\u30020\u30021/",
        "http://\u24db\u24de\u24d2\u24d0\u24db\u24d7\u24de\u24e2\u24e3/",
        "http://LOCALHOST./",
        "http://%31%32%37.0.0.1/",
        "http://%6c%6f%63%61%6c%68%6f%73%74/",
    ],
)
def test_private_webhooks_fail_unless_allowed(url: str) -> None:
    with pytest.raises(InvalidWebhookUrl):
        check_webhook_url(url, allow_private=False)
    check_webhook_url(url, allow_private=True)


@pytest.mark.parametrize("allow_private", [False, True])
def test_ports_outside_the_tcp_range_are_refused(allow_private: bool) -> None:
    with pytest.raises(InvalidWebhookUrl):
        check_webhook_url("http://hooks.example.com:70000/", allow_private=allow_private)
