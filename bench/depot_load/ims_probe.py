"""If-Modified-Since in whole seconds: a publish a truck may not see."""

from __future__ import annotations

import http.client
import time
from typing import Any

from .depot import Published
from .http import http_date
from .settings import DEPOT_PREFIX


def http_get(port: int, path: str, modified_since: str | None) -> tuple[int, dict, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"If-Modified-Since": modified_since} if modified_since else {}
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def ims_race_probe(published: Published, nginx_port: int) -> dict[str, Any]:
    """A truck downloads a pointer and, in the same second, CI writes the next one. get_url's
    next If-Modified-Since is its own download time in whole seconds: before the CLI dated a
    new pointer the next whole second, that was not older than the new file's mtime and nginx
    answered 304 (the truck kept the old pointer until the channel changed again); now it
    answers 200. The depot's Last-Modified sent back gets 200 either way. The writes are the
    CLI's own (inference_image.channels.publish, in-process, within milliseconds)."""
    from inference_image.channels import publish as channel_publish

    channel, path = "ims-probe", f"{DEPOT_PREFIX}/channels/ims-probe.json"
    channel_publish(published.root, channel, published.releases["v1"], published.signing_key)
    time.sleep(1.02 - time.time() % 1.0)  # early in a second
    status, headers, old = http_get(nginx_port, path, None)
    downloaded = time.time()  # get_url's file mtime: the download's end
    written = time.time()
    channel_publish(published.root, channel, published.releases["v2"], published.signing_key)
    as_get_url, _, _ = http_get(nginx_port, path, http_date(downloaded))
    with_last_modified, _, new = http_get(nginx_port, path, headers.get("last-modified"))
    return {
        "old_downloaded_at_fraction": round(downloaded % 1.0, 3),
        "new_written_at_fraction": round(written % 1.0, 3),
        "same_second": int(downloaded) == int(written),
        "next_poll_as_get_url_sends_it": as_get_url,
        "next_poll_with_the_depots_last_modified": with_last_modified,
        "new_pointer_differs": new != old and status == 200,
    }
