"""The vendored charting library is the pinned one: the files' hashes match
VENDORED.md and the Subresource Integrity the pages load them with, and the
pages still allow no inline script or style (uPlot needs neither)."""

import base64
import hashlib
import os
import re

from webui import app, pages

VENDOR = os.path.join(app.STATIC, "vendor", "uplot")


def digest(name, algo):
    with open(os.path.join(VENDOR, name), "rb") as f:
        return hashlib.new(algo, f.read())


def test_files_match_the_noted_sha256():
    noted = open(os.path.join(VENDOR, "VENDORED.md")).read()
    for name in ("uPlot.iife.min.js", "uPlot.min.css", "LICENSE"):
        assert f"`{digest(name, 'sha256').hexdigest()}  {name}`" in noted, name
    assert "MIT License" in open(os.path.join(VENDOR, "LICENSE")).read()


def test_pages_load_it_with_subresource_integrity():
    for name, sri in (("uPlot.iife.min.js", pages.UPLOT_JS_SRI), ("uPlot.min.css", pages.UPLOT_CSS_SRI)):
        assert sri == "sha384-" + base64.b64encode(digest(name, "sha384").digest()).decode(), name
    html = pages.network(type("S", (), {"csrf": "t", "role": "viewer", "user": "v", "admin": False})(), "h", "i")
    assert f'integrity="{pages.UPLOT_JS_SRI}"' in html and f'integrity="{pages.UPLOT_CSS_SRI}"' in html


def test_the_csp_still_forbids_inline_code_and_other_origins():
    assert "script-src 'self';" in app.CSP and "style-src 'self';" in app.CSP
    assert "unsafe" not in app.CSP and not re.search(r"https?:", app.CSP)
