"""Header rules of the proxy (pure functions)."""

import urllib3

from agentainer.proxy import forward_headers, replay_headers, response_headers, stored_headers

CLIENT = [("Host", "127.0.0.1:8081"), ("Connection", "keep-alive, X-Secret-Hop"),
          ("X-Secret-Hop", "1"), ("Keep-Alive", "timeout=5"), ("TE", "trailers"),
          ("Upgrade", "h2c"), ("Proxy-Authorization", "Basic x"),
          ("X-Agentainer-Replay", "true"), ("X-Agentainer-Request-Id", "req-spoofed"),
          ("X-Forwarded-For", "6.6.6.6"), ("Authorization", "Bearer token"),
          ("Cookie", "a=b"), ("Accept", "text/event-stream"), ("X-Custom", "kept")]


def names(headers):
    return [name.lower() for name, _ in headers]


def test_forward_drops_hop_by_hop_own_and_spoofable_headers():
    sent = forward_headers(CLIENT, client_ip="10.0.0.9", proto="http", host="example",
                           strip_authorization=False)
    assert names(sent) == ["authorization", "cookie", "accept", "x-custom",
                           "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"]
    assert dict(sent)["X-Forwarded-For"] == "10.0.0.9"


def test_forward_strips_agentainer_authorization():
    sent = forward_headers(CLIENT, client_ip="", proto="http", host="h",
                           strip_authorization=True)
    assert "authorization" not in names(sent)


def test_stored_headers_redact_secrets_and_replay_leaves_them_out():
    stored = stored_headers(CLIENT)
    assert dict(stored)["Authorization"] == dict(stored)["Cookie"] == "[redacted]"
    assert "host" not in names(stored) and "x-agentainer-replay" not in names(stored)
    assert "x-secret-hop" not in names(stored)
    assert replay_headers(stored) == [("Accept", "text/event-stream"), ("X-Custom", "kept")]


def test_response_headers_drop_hop_by_hop_and_connection_named():
    upstream = urllib3.HTTPHeaderDict()
    for name, value in [("Content-Type", "text/plain"), ("Transfer-Encoding", "chunked"),
                        ("Connection", "close, X-Internal"), ("X-Internal", "1"),
                        ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]:
        upstream.add(name, value)
    assert response_headers(upstream) == [("Content-Type", "text/plain"),
                                          ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]
