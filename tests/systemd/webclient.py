#!/usr/bin/python3
"""An HTTP client of the web UI, run inside the systemd tier's guest (the UI
listens on the guest's loopback): signs in as a browser would (the sign-in
form's CSRF token and cookie), then fetches the Networks page and its data.
Prints one JSON object. Standard library only: the guest's Debian python3.

Usage: webclient.py BASE_URL USER  (password on stdin)"""

import http.cookiejar
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request


def main(base: str, user: str, password: str) -> dict:
    jar = http.cookiejar.CookieJar()
    web = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    form = web.open(f"{base}/login", timeout=30).read().decode()
    token = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
    body = urllib.parse.urlencode({"csrf": token, "username": user, "password": password}).encode()
    out = {}
    try:
        resp = web.open(f"{base}/login", data=body, timeout=30)   # 303 to /networks, followed
        out["signed_in"] = True
        out["landed_on"] = urllib.parse.urlparse(resp.geturl()).path
        out["page"] = resp.read().decode()
    except urllib.error.HTTPError as e:
        out["signed_in"] = False
        out["status"] = e.code
        out["page"] = e.read().decode()
        return out
    out["api"] = json.loads(web.open(f"{base}/api/networks", timeout=30).read())
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], sys.stdin.readline().rstrip("\n"))))
