"""HTML shells. Data is filled in by static/app.js from the JSON API; no
inline script or style anywhere, so the Content-Security-Policy can forbid them."""

from __future__ import annotations

from html import escape


# uPlot (static/vendor/uplot/VENDORED.md), loaded with Subresource Integrity:
# a changed file on disk is refused by the browser, not run.
UPLOT_JS_SRI = "sha384-Gx3t0zdBAuQOuvvmaLZj7HKEiSgWTAs+VdtNY7wt19QDPTDQjFIwAuXDj0zeN00c"
UPLOT_CSS_SRI = "sha384-IfV0B7MIOYuO95kO9G5ySKPz/85zqFNOAs8iy4tkK5zd9izhJAB8b7lHrwYqqmYE"
CHARTS = (f'<link rel="stylesheet" href="/static/vendor/uplot/uPlot.min.css" integrity="{UPLOT_CSS_SRI}">'
          f'<script src="/static/vendor/uplot/uPlot.iife.min.js" integrity="{UPLOT_JS_SRI}" defer></script>')


def layout(title: str, body: str, session=None, page: str = "", head: str = "") -> str:
    user = ""
    meta = ""
    if session is not None:
        meta = (f'<meta name="csrf-token" content="{escape(session.csrf)}">'
                f'<meta name="user-role" content="{escape(session.role)}">')
        user = (f'<div class="user"><span class="who">{escape(session.user)} '
                f'<span class="role">{escape(session.role)}</span></span>'
                f'<form method="post" action="/logout"><input type="hidden" name="csrf" value="{escape(session.csrf)}">'
                f'<button type="submit" class="link" id="sign-out">Sign out</button></form></div>')
    nav = ""
    if session is not None:
        nav = ('<nav class="sidebar" aria-label="Main"><div class="brand">fcnetd</div>'
               '<a href="/networks" class="active" aria-current="page">Networks</a></nav>')
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} · fcnetd</title>{meta}
<link rel="icon" href="data:,">{head}<link rel="stylesheet" href="/static/app.css"><script src="/static/app.js" defer></script></head>
<body data-page="{escape(page)}">{nav}<main>{user}{body}</main>
<div id="toasts" role="status" aria-live="polite"></div></body></html>"""


def login(error: str = "", csrf: str = "") -> str:
    err = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    return layout("Sign in", f"""
<section class="login card">
  <h1>Sign in to fcnetd</h1>{err}
  <form method="post" action="/login">
    <input type="hidden" name="csrf" value="{escape(csrf)}">
    <label for="username">User name</label>
    <input id="username" name="username" autocomplete="username" required autofocus>
    <label for="password">Password</label>
    <input id="password" name="password" type="password" autocomplete="current-password" required>
    <button type="submit" class="primary">Sign in</button>
  </form>
</section>""", page="login")


def networks(session) -> str:
    create = ('<button id="create-open" class="primary" type="button">Create Network</button>'
              if session.admin else "")
    delete_many = ('<button id="delete-many" class="danger-outline" type="button" hidden disabled>'
                   'Delete selected</button>' if session.admin else "")
    return layout("Networks", f"""
<header class="page-head">
  <div><h1>Networks <span id="count" class="count" aria-label="network count"></span></h1>
  <p id="answered" class="answered" role="status" hidden></p>
  <p class="sub">Bridges and VLANs that connect your VMs. Networks appear here automatically when a VM is attached.</p></div>
  {create}
</header>
<div class="toolbar" role="search">
  <label class="sr" for="search">Search networks</label>
  <input id="search" type="search" placeholder="Search by name, bridge or VLAN">
  <label class="sr" for="type">Type</label>
  <select id="type"><option value="">All types</option><option value="bridge">Bridge</option><option value="vlan">VLAN</option></select>
  <label class="sr" for="host-filter">Host</label>
  <select id="host-filter" hidden><option value="">All hosts</option></select>
  <label class="check"><input id="unused" type="checkbox"> Unused only (no VM attached)</label>
  {delete_many}
</div>
<table class="grid" id="networks">
  <thead><tr>
    <th scope="col" class="select-col" hidden><label class="sr" for="select-all">Select all shown</label>
      <input type="checkbox" id="select-all"></th>
    <th scope="col">Network Name</th><th scope="col" class="host-col" hidden>Host</th>
    <th scope="col">Bridge</th><th scope="col">VLAN ID</th><th scope="col">Mode</th>
    <th scope="col" aria-sort="none"><button type="button" id="sort-vms" class="sort">Attached VMs <span aria-hidden="true">↕</span></button></th>
    <th scope="col">Created</th><th scope="col" title="Rx: what the VMs sent; Tx: what they received">Traffic</th>
    <th scope="col">Status</th><th scope="col"><span class="sr">Actions</span></th>
  </tr></thead>
  <tbody></tbody>
</table>
<p id="empty" class="empty" hidden>No networks match.</p>
<nav class="pager" aria-label="Pages"><button type="button" id="prev">Previous</button>
  <span id="page-info"></span><button type="button" id="next">Next</button></nav>

<dialog id="create-dialog" aria-labelledby="create-title">
  <form id="create-form" novalidate>
    <h2 id="create-title">Create Network</h2>
    <label for="c-name">Network name</label>
    <input id="c-name" name="name" placeholder="fcbr0" maxlength="63" pattern="[A-Za-z0-9][A-Za-z0-9._\\-]*">
    <p class="hint">Leave empty for the automatic name: bridge or bridge-vlan-ID.</p>
    <label for="c-host">Host</label>
    <select id="c-host" name="host"></select>
    <label for="c-bridge">Bridge</label>
    <select id="c-bridge" name="bridge" required></select>
    <label for="c-vlan">VLAN ID (optional)</label>
    <input id="c-vlan" name="vlan" type="number" min="1" max="4094" inputmode="numeric" placeholder="None">
    <p class="hint">1–4094; empty for an untagged network. 4095 is reserved.</p>
    <label for="c-mode">Mode</label>
    <select id="c-mode" name="mode"><option value="bridge">Bridge (layer 2 only)</option>
      <option value="nat">NAT (DHCP and internet via fcnetd)</option></select>
    <label for="c-subnet">Subnet (optional)</label>
    <input id="c-subnet" name="subnet" placeholder="Automatic" maxlength="18" inputmode="decimal">
    <p class="hint" id="c-subnet-hint">An IPv4 network such as 10.213.5.0/24, /16 to /29. NAT: empty for a free /24 of fcnetd's pool.</p>
    <label for="c-description">Description (optional)</label>
    <input id="c-description" name="description" maxlength="256">
    <p id="create-error" class="error" role="alert" hidden></p>
    <div class="actions"><button type="button" class="cancel">Cancel</button>
      <button type="submit" class="primary">Create Network</button></div>
  </form>
</dialog>

<dialog id="delete-dialog" aria-labelledby="delete-title">
  <form method="dialog" id="delete-form">
    <h2 id="delete-title">Delete Network</h2>
    <p id="delete-text"></p>
    <p id="delete-error" class="error" role="alert" hidden></p>
    <div class="actions"><button type="button" class="cancel">Cancel</button>
      <button type="submit" class="danger" id="delete-confirm">Delete</button></div>
  </form>
</dialog>

<dialog id="many-dialog" aria-labelledby="many-title">
  <form method="dialog" id="many-form">
    <h2 id="many-title">Delete unused networks</h2>
    <p id="many-text"></p>
    <ul id="many-list" class="results"></ul>
    <div class="actions"><button type="button" class="cancel" id="many-close">Cancel</button>
      <button type="submit" class="danger" id="many-confirm">Delete</button></div>
  </form>
</dialog>""", session, page="networks")


def network(session, host: str, net_id: str) -> str:
    probe = ('<label class="check"><input id="diag-probe" type="checkbox"> with DHCP probe</label>'
             '<label class="check" title="Frames sent in the network\'s VLAN must reach none of the bridge\'s other '
             'VLANs (tagged networks)"><input id="diag-isolation" type="checkbox"> with isolation probe</label>'
             if session.admin else "")
    move = """
<dialog id="move-dialog" aria-labelledby="move-title">
  <form id="move-form" novalidate>
    <h2 id="move-title">Move VM</h2>
    <p id="move-text" class="hint"></p>
    <label for="mv-bridge">Bridge</label>
    <select id="mv-bridge" name="bridge" required></select>
    <label for="mv-vlan">VLAN ID (optional)</label>
    <input id="mv-vlan" name="vlan" type="number" min="1" max="4094" inputmode="numeric" placeholder="None">
    <p class="hint">The VM keeps running: its TAP is moved, not made anew. The network is created if it does not exist.</p>
    <p id="move-error" class="error" role="alert" hidden></p>
    <div class="actions"><button type="button" class="cancel">Cancel</button>
      <button type="submit" class="primary">Move</button></div>
  </form>
</dialog>""" if session.admin else ""
    return layout("Network", f"""
<p><a href="/networks">← Networks</a></p>
<div id="detail" data-host="{escape(host)}" data-id="{escape(net_id)}">
  <header class="page-head"><h1 id="d-name">Network</h1>
    <div class="diag-actions">{probe}<button type="button" id="diagnose" class="primary">Diagnose</button></div>
  </header>
  <p id="d-gone" class="error" role="alert" hidden>This network was deleted.</p>
  <div id="d-drift" class="drift" role="status" hidden><span id="d-drift-text"></span>
    <button type="button" class="link" id="d-drift-dismiss">Dismiss</button></div>
  <section id="diag" class="diag" aria-live="polite" hidden>
    <h2 id="diag-title">Diagnose</h2><p id="diag-summary" class="sub"></p>
    <table class="grid" id="diag-checks"><thead><tr><th scope="col">Check</th><th scope="col">Result</th>
      <th scope="col">What fcnetd saw</th><th scope="col">What to do</th></tr></thead><tbody></tbody></table>
    <p id="diag-error" class="error" role="alert" hidden></p>
  </section>
  <div class="tabs" role="tablist" aria-label="Network">
    <button type="button" role="tab" id="tab-overview" aria-controls="panel-overview" aria-selected="true">Overview</button>
    <button type="button" role="tab" id="tab-metrics" aria-controls="panel-metrics" aria-selected="false" tabindex="-1">Metrics</button>
  </div>
  <section id="panel-overview" role="tabpanel" aria-labelledby="tab-overview">
  <dl class="facts">
    <dt>Bridge</dt><dd id="d-bridge"></dd><dt>VLAN ID</dt><dd id="d-vlan"></dd>
    <dt>Mode</dt><dd id="d-mode"></dd><dt>Subnet</dt><dd id="d-subnet" class="mono"></dd>
    <dt>Gateway</dt><dd id="d-gateway" class="mono"></dd>
    <dt>Status</dt><dd id="d-status"></dd><dt>Created</dt><dd id="d-created"></dd>
    <dt>Origin</dt><dd id="d-origin"></dd><dt>Host</dt><dd id="d-host"></dd>
    <dt>Network ID</dt><dd id="d-id" class="mono"></dd><dt>Description</dt><dd id="d-description"></dd>
    <dt>Traffic</dt><dd id="d-rates"></dd>
  </dl>
  <h2>VMs using this network <span id="d-count" class="count"></span></h2>
  <table class="grid" id="vms"><thead><tr><th scope="col">VM</th><th scope="col">VM ID</th><th scope="col">NIC</th>
    <th scope="col">Address</th><th scope="col">MAC</th><th scope="col">State</th><th scope="col">TAP device</th><th scope="col">Attached</th>
    <th scope="col"><span class="sr">Actions</span></th></tr></thead>
    <tbody></tbody></table>
  <p id="no-vms" class="empty" hidden>No VMs are attached. The network can be deleted.</p>
  </section>
  <section id="panel-metrics" role="tabpanel" aria-labelledby="tab-metrics" hidden>
    <div class="toolbar"><label for="mx-target">Show</label>
      <select id="mx-target"><option value="">The whole network</option></select>
      <span id="mx-now" class="sub" role="status"></span></div>
    <p id="mx-note" class="error" role="alert" hidden></p>
    <h2>Bytes per second</h2><div id="chart-bytes" class="chart"></div>
    <h2>Packets per second</h2><div id="chart-packets" class="chart"></div>
    <p class="hint">The last hour, one sample every 10 s, updated live. Rx: what the VMs sent; Tx: what they received.</p>
  </section>
</div>{move}""", session, page="network", head=CHARTS)
