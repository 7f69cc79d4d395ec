"""One HTTP request to `caravan serve` without a client library, for what
clients hide: status codes and error bodies."""

import http.client
import json
import urllib.parse


def request(url, method, path, body=None, raw=None):
    """(status, parsed JSON or text) of one request: `body` sent as JSON,
    or `raw` bytes as they are."""
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    text = r.read().decode()
    conn.close()
    try:
        return r.status, json.loads(text)
    except ValueError:
        return r.status, text
