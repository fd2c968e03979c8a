"use strict";
// fcnetd web UI. Everything comes from the JSON API, which asks fcnetd over D-Bus.
(function () {
  const $ = (sel, root = document) => root.querySelector(sel);
  const meta = (name) => (document.querySelector(`meta[name="${name}"]`) || {}).content || "";
  const csrf = meta("csrf-token");
  const isAdmin = meta("user-role") === "admin";

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (v !== false && v !== null && v !== undefined) node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }

  function toast(text, kind = "ok", title = "") {
    const box = el("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" },
      title ? el("strong", {}, title) : "", el("span", {}, text));
    $("#toasts").append(box);
    setTimeout(() => box.remove(), kind === "error" ? 8000 : 4000);
  }

  async function api(method, url, body) {
    const opts = { method, headers: { "X-CSRF-Token": csrf } };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    const resp = await fetch(url, opts);
    if (resp.status === 401) { location.href = "/login"; throw new Error("signed out"); }
    const data = await resp.json().catch(() => ({ error: `HTTP ${resp.status}` }));
    if (!resp.ok) { const err = new Error(data.error || `HTTP ${resp.status}`); err.data = data; throw err; }
    return data;
  }

  const when = (iso) => iso ? iso.slice(0, 16).replace("T", " ") + " UTC" : "";

  // Bytes per second the way people read them (1 kB = 1000 B, as link speeds are given).
  function perSecond(v, unit = "B") {
    const abs = Math.abs(v || 0);
    const [div, prefix] = abs >= 1e9 ? [1e9, "G"] : abs >= 1e6 ? [1e6, "M"] : abs >= 1e3 ? [1e3, "k"] : [1, ""];
    const n = (v || 0) / div;
    return `${n >= 100 || div === 1 ? Math.round(n) : n.toFixed(1)} ${prefix}${unit}/s`;
  }
  const rates = (n) => n.receive_rate === undefined ? "—"
    : `Rx ${perSecond(n.receive_rate)} · Tx ${perSecond(n.transmit_rate)}`;
  const driftText = (d) => `Drift repaired ${when(d.time)}: ${d.what} — ${d.detail}`;

  function live(onEvent) {
    let timer = null;
    const source = new EventSource("/api/events");
    source.onmessage = (msg) => {
      const event = JSON.parse(msg.data);
      clearTimeout(timer);
      // A burst of VM starts is one refresh; but a drift or a deletion is
      // news of its own, which a "changed" event right behind it must not
      // swallow (the drift banner was lost that way).
      if (event.kind === "drift" || event.kind === "removed") onEvent(event);
      else timer = setTimeout(() => onEvent(event), 80);
    };
    return source;
  }

  // The rates shown (table column, detail line) are as new as fcnetd's
  // newest traffic sample, one each 10 s: no event says a rate changed, so
  // the page asks again that often while it is in view.
  const SAMPLE_MS = 10000;
  function everySample(load) {
    setInterval(() => { if (document.visibilityState === "visible") load(); }, SAMPLE_MS);
  }

  function dialogs() {
    for (const d of document.querySelectorAll("dialog")) {
      for (const b of d.querySelectorAll("button.cancel")) b.addEventListener("click", () => d.close());
    }
  }

  // ---- Networks page ------------------------------------------------------
  function networksPage() {
    const state = { search: "", type: "", host: "", sort: "created", order: "desc", page: 1, unused: false };
    const selected = new Map();  // host/id -> network, kept across the live reloads
    let last = null;
    let multiHost = false;

    let asked = 0;
    let drawn = "";
    async function load() {
      const ask = ++asked;
      const q = new URLSearchParams({ search: state.search, type: state.type, host: state.host, sort: state.sort,
                                      order: state.order, page: state.page, unused: state.unused ? "1" : "" });
      const data = await api("GET", `/api/networks?${q}`);
      if (ask !== asked) return;  // a newer answer is coming: an older one must not overwrite it
      last = data;
      // The same answer to the same question (most periodic asks): nothing
      // is drawn anew, as on the detail page. The question counts: the
      // unused filter alone changes the table (its selection column).
      const text = `${q}\n${JSON.stringify(data)}`;
      if (text === drawn) return;
      drawn = text;
      multiHost = data.hosts.length > 1;
      render(data);
    }

    // A host that does not answer is said so, with its reason and when it
    // was last seen: in a row of the table where its networks would be, in
    // the host filter and in the Create dialog's host select.
    const lastSeen = (h) => h.last_seen ? `last seen ${h.last_seen.slice(0, 19).replace("T", " ")} UTC` : "not seen yet";
    const downText = (h) => `${h.name} is unavailable: ${h.error} (${lastSeen(h)})`;

    function renderHostFilter(hosts) {
      const sel = $("#host-filter");
      sel.hidden = hosts.length <= 1;
      const options = [el("option", { value: "" }, "All hosts"),
        ...hosts.map((h) => el("option", { value: h.name }, h.available ? h.name : `${h.name} (unavailable)`))];
      sel.replaceChildren(...options);
      sel.value = hosts.some((h) => h.name === state.host) ? state.host : "";
    }

    function render(data) {
      $("#count").textContent = `(${data.all})`;
      for (const th of document.querySelectorAll(".host-col")) th.hidden = !multiHost;
      const answered = $("#answered");
      answered.hidden = data.hosts.length <= 1;
      answered.textContent = `${data.answered} of ${data.asked} host${data.asked === 1 ? "" : "s"} answered`;
      answered.classList.toggle("partial", data.answered < data.asked);
      renderHostFilter(data.hosts);
      const down = data.hosts.filter((h) => !h.available && (!state.host || h.name === state.host));
      const body = $("#networks tbody");
      const columns = document.querySelectorAll("#networks thead th:not([hidden])").length;
      body.replaceChildren(...down.map((h) => el("tr", { class: "host-down", "data-host": h.name },
        el("td", { colspan: columns, role: "alert" }, downText(h)))), ...data.items.map(row));
      $("#empty").hidden = data.items.length > 0;
      renderSelection(data.items);
      $("#page-info").textContent = `Page ${data.page} of ${data.pages} · ${data.total} networks`;
      $("#prev").disabled = data.page <= 1;
      $("#next").disabled = data.page >= data.pages;
      const th = $("#sort-vms").closest("th");
      th.setAttribute("aria-sort", state.sort === "vms" ? (state.order === "asc" ? "ascending" : "descending") : "none");
    }

    function row(n) {
      const href = `/networks/${encodeURIComponent(n.host)}/${encodeURIComponent(n.id)}`;
      const actions = el("td", { class: "actions" }, el("a", { href, class: "button" }, "View"));
      if (isAdmin) {
        actions.append(el("button", { type: "button", class: "danger-outline", "data-id": n.id,
          "aria-label": `Delete ${n.name}`, onclick: () => askDelete(n) }, "Delete"));
      }
      const name = el("td", { class: "name-cell" }, el("a", { href, class: "name" }, n.name));
      // Its status, and a marker when fcnetd repaired drift on it lately.
      const status = el("td", { class: "status-cell" }, el("span", { class: `status ${n.status}` }, n.status));
      if (n.drift) status.append(el("span", { class: "marker drift", title: driftText(n.drift) }, "drift repaired"));
      const cells = [];
      if (selecting()) {
        const key = `${n.host}/${n.id}`;
        cells.push(el("td", { class: "select-cell" }, el("input", { type: "checkbox", "aria-label": `Select ${n.name}`,
          "data-key": key, checked: selected.has(key),
          onchange: (ev) => { if (ev.target.checked) selected.set(key, n); else selected.delete(key); renderSelection(); } })));
      }
      return el("tr", { "data-name": n.name, class: n.drift ? "drifted" : "" }, ...cells, name,
        ...(multiHost ? [el("td", {}, n.host)] : []),
        el("td", { class: "mono" }, n.bridge),
        el("td", {}, n.vlan ? String(n.vlan) : ""),
        el("td", { class: "mode" }, n.mode),
        el("td", { class: "num" }, String(n.vm_count)),
        el("td", {}, when(n.created)),
        el("td", { class: "rates num" }, rates(n)),
        status,
        actions);
    }

    // Cleanup: with the unused filter on, admins pick networks and delete them in one action.
    const selecting = () => isAdmin && state.unused;
    function renderSelection(items) {
      if (!isAdmin) return;
      if (items) {  // drop what is no longer listed unused (a VM attached meanwhile, or deleted elsewhere)
        const shown = new Set(items.map((n) => `${n.host}/${n.id}`));
        for (const key of selected.keys()) if (!shown.has(key)) selected.delete(key);
      }
      for (const th of document.querySelectorAll(".select-col")) th.hidden = !selecting();
      const all = $("#select-all");
      const boxes = document.querySelectorAll("#networks tbody input[type=checkbox]");
      all.checked = boxes.length > 0 && [...boxes].every((b) => b.checked);
      const button = $("#delete-many");
      button.hidden = !selecting();
      button.disabled = selected.size === 0;
      button.textContent = `Delete selected (${selected.size})`;
    }

    function askDeleteMany() {
      const d = $("#many-dialog");
      const nets = [...selected.values()];
      $("#many-title").textContent = `Delete ${nets.length} unused network${nets.length === 1 ? "" : "s"}`;
      $("#many-text").textContent = "This removes them from the registry; the Linux bridges on the hosts are not " +
        "affected. A network that has a VM attached by then is kept.";
      $("#many-list").replaceChildren(...nets.map((n) => el("li", { "data-name": n.name }, n.name)));
      const confirm = $("#many-confirm");
      confirm.hidden = false;
      confirm.disabled = false;
      $("#many-close").textContent = "Cancel";
      confirm.onclick = async (ev) => {
        ev.preventDefault();
        confirm.disabled = true;
        let data;
        try {
          data = await api("POST", "/api/networks/delete", { networks: nets.map((n) => ({ host: n.host, id: n.id })) });
        } catch (e) {
          $("#many-text").textContent = e.message;
          return;
        }
        // Each network is answered for on its own: deleted, or why not.
        $("#many-title").textContent = `Deleted ${data.deleted} of ${data.results.length}`;
        $("#many-text").textContent = "";
        $("#many-list").replaceChildren(...data.results.map((r) => el("li",
          { class: r.ok ? "ok" : "fail", "data-name": r.name }, r.ok ? `${r.name}: deleted` : `${r.name}: ${r.error}`)));
        for (const r of data.results) if (r.ok) selected.delete(`${r.host}/${r.id}`);
        confirm.hidden = true;
        $("#many-close").textContent = "Close";
        toast(`${data.deleted} of ${data.results.length} networks deleted.`, data.deleted === data.results.length ? "ok" : "error");
        load();
      };
      d.showModal();
    }

    function askDelete(n) {
      const d = $("#delete-dialog");
      const confirm = $("#delete-confirm");
      $("#delete-error").hidden = true;
      if (n.vm_count > 0) {
        $("#delete-title").textContent = "Cannot Delete Network";
        $("#delete-text").textContent =
          `Network has ${n.vm_count} attached VM${n.vm_count === 1 ? "" : "s"}. Remove VMs first.`;
        confirm.disabled = true;
      } else {
        $("#delete-title").textContent = "Delete Network";
        $("#delete-text").textContent = `Are you sure you want to delete ${n.name}? This will remove the ` +
          "network from the registry, not affect the Linux bridge " + n.bridge +
          " on the host. VMs can no longer be attached to it until it is created again.";
        confirm.disabled = false;
      }
      confirm.onclick = async (ev) => {
        ev.preventDefault();
        try {
          await api("DELETE", `/api/networks/${encodeURIComponent(n.host)}/${encodeURIComponent(n.id)}`);
          d.close();
          toast(`Network ${n.name} deleted.`);
          load();
        } catch (e) {
          $("#delete-title").textContent = e.data && e.data.code === "NetworkInUse" ? "Cannot Delete Network" : "Delete failed";
          $("#delete-error").textContent = e.message;
          $("#delete-error").hidden = false;
          confirm.disabled = true;
        }
      };
      d.showModal();
      $("button.cancel", d).focus();
    }

    async function openCreate() {
      const d = $("#create-dialog");
      const form = $("#create-form");
      form.reset();
      $("#create-error").hidden = true;
      const hostSel = $("#c-host");
      const hosts = last ? last.hosts : [];
      hostSel.replaceChildren(...hosts.map((h) => el("option", { value: h.name, disabled: !h.available,
        title: h.available ? false : downText(h) }, h.available ? h.name : `${h.name} — unavailable`)));
      const first = hosts.find((h) => h.available);
      if (first) hostSel.value = first.name;
      hostSel.closest("form").querySelector('label[for="c-host"]').hidden = hosts.length <= 1;
      hostSel.hidden = hosts.length <= 1;
      await fillBridges();
      d.showModal();
      $("#c-name").focus();
    }

    // Each host change asks for that host's bridges; only the newest answer
    // may fill the list, and it keeps the bridge the user chose meanwhile
    // (a late answer used to reset it to the first, so the dialog created a
    // network on a bridge the user had not picked).
    let bridgeAsk = 0;
    async function fillBridges() {
      const host = $("#c-host").value;
      const sel = $("#c-bridge");
      const ask = ++bridgeAsk;
      try {
        const data = await api("GET", `/api/bridges?host=${encodeURIComponent(host)}`);
        if (ask !== bridgeAsk) return;
        const chosen = sel.value;
        sel.replaceChildren(...data.bridges.map((b) => el("option", { value: b }, b)));
        if (data.bridges.includes(chosen)) sel.value = chosen;
        sel.dataset.answer = String(ask);  // which answer the list shows (tests wait on it)
      } catch (e) {
        if (ask !== bridgeAsk) return;
        sel.replaceChildren();
        toast(e.message, "error", "Cannot list bridges");
      }
      updatePlaceholder();
    }

    function updatePlaceholder() {
      const vlan = $("#c-vlan").value.trim();
      const bridge = $("#c-bridge").value || "bridge";
      $("#c-name").placeholder = vlan && vlan !== "0" ? `${bridge}-vlan-${vlan}` : bridge;
    }

    function browserCheck() {
      const vlan = $("#c-vlan");
      const name = $("#c-name");
      const err = $("#create-error");
      let msg = "";
      if (vlan.value.trim() !== "") {
        const v = Number(vlan.value);
        if (!Number.isInteger(v) || v < 1 || v > 4094) msg = `VLAN ID: ${vlan.value} is out of range: 1-4094 (4095 is reserved), or empty for none.`;
      }
      if (!msg && name.value && !name.checkValidity()) msg = "Network name: use letters, digits, '.', '_' and '-', starting with a letter or digit.";
      // Only the shape: whether the subnet is free, and its exact rules, are fcnetd's to say.
      const subnet = $("#c-subnet").value.trim();
      if (!msg && subnet && !/^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/.test(subnet)) msg = "Subnet: write an IPv4 network such as 10.213.5.0/24, or leave it empty.";
      if (!msg && !$("#c-bridge").value) msg = "Bridge: choose a bridge.";
      err.textContent = msg;
      err.hidden = !msg;
      return !msg;
    }

    async function submitCreate(ev) {
      ev.preventDefault();
      if (!browserCheck()) return;
      const body = { name: $("#c-name").value.trim(), host: $("#c-host").value, bridge: $("#c-bridge").value,
                     vlan: $("#c-vlan").value.trim(), description: $("#c-description").value.trim(),
                     mode: $("#c-mode").value, subnet: $("#c-subnet").value.trim() };
      try {
        const data = await api("POST", "/api/networks", body);
        $("#create-dialog").close();
        toast(`Network ${data.name} created.`, "ok", "Created");
        state.page = 1;
        await load();
      } catch (e) {
        $("#create-error").textContent = e.message;
        $("#create-error").hidden = false;
        toast(e.message, "error", "Cannot create network");
      }
    }

    let searchTimer = null;
    $("#search").addEventListener("input", (e) => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => { state.search = e.target.value; state.page = 1; load(); }, 150);
    });
    $("#type").addEventListener("change", (e) => { state.type = e.target.value; state.page = 1; load(); });
    $("#host-filter").addEventListener("change", (e) => { state.host = e.target.value; state.page = 1; load(); });
    $("#sort-vms").addEventListener("click", () => {
      if (state.sort !== "vms") { state.sort = "vms"; state.order = "desc"; }
      else if (state.order === "desc") state.order = "asc";
      else { state.sort = "created"; state.order = "desc"; }
      state.page = 1;
      load();
    });
    $("#unused").addEventListener("change", (e) => { state.unused = e.target.checked; state.page = 1; load(); });
    $("#prev").addEventListener("click", () => { state.page -= 1; load(); });
    $("#next").addEventListener("click", () => { state.page += 1; load(); });
    if (isAdmin) {
      $("#create-open").addEventListener("click", openCreate);
      $("#create-form").addEventListener("submit", submitCreate);
      $("#c-host").addEventListener("change", fillBridges);
      $("#c-vlan").addEventListener("input", updatePlaceholder);
      $("#c-bridge").addEventListener("change", updatePlaceholder);
      $("#delete-many").addEventListener("click", askDeleteMany);
      $("#select-all").addEventListener("change", (e) => {
        for (const box of document.querySelectorAll("#networks tbody input[type=checkbox]")) {
          box.checked = e.target.checked;
          box.dispatchEvent(new Event("change"));
        }
      });
    }
    live(() => load());
    everySample(load);
    load();
  }

  // ---- Network detail page ------------------------------------------------
  function networkPage() {
    const root = $("#detail");
    const host = root.dataset.host;
    const base = `/api/networks/${encodeURIComponent(host)}/${encodeURIComponent(root.dataset.id)}`;
    const url = base;
    let current = null;

    // The banner says why the data below may be old (fcnetd not running, the
    // network deleted); it shows the newest answer's word: a later answer
    // that succeeded takes it away, and an older one arriving late is dropped.
    const banner = $("#d-gone");
    function say(text) { banner.textContent = text; banner.hidden = !text; }
    let asked = 0;
    let deleted = false;

    // Drift repaired on this network: shown until dismissed, and again for a newer one.
    let dismissed = "";
    function showDrift(d) {
      const text = d ? driftText(d) : "";
      $("#d-drift-text").textContent = text;
      $("#d-drift").hidden = !text || text === dismissed;
    }
    $("#d-drift-dismiss").addEventListener("click", () => { dismissed = $("#d-drift-text").textContent; showDrift(null); });

    let drawn = "";
    async function load() {
      const ask = ++asked;
      let n;
      try {
        n = await api("GET", url);
      } catch (e) {
        if (ask === asked && !deleted) say(e.message);
        return;
      }
      if (ask !== asked || deleted) return;
      say("");
      // The same answer again (most of the periodic asks): nothing is drawn
      // anew, so no row is replaced under a pointer about to click it.
      const text = JSON.stringify(n);
      if (text === drawn) return;
      drawn = text;
      current = n;
      document.title = `${n.name} · fcnetd`;
      $("#d-name").textContent = n.name;
      $("#d-bridge").textContent = n.bridge;
      $("#d-vlan").textContent = n.vlan ? String(n.vlan) : "None (untagged)";
      $("#d-mode").textContent = n.mode === "nat" ? `nat (DHCP ${n.dhcp ? "on" : "off"})` : "bridge";
      $("#d-subnet").textContent = n.subnet || "—";
      $("#d-gateway").textContent = n.gateway || "—";
      $("#d-status").textContent = n.status;
      $("#d-status").className = `status ${n.status}`;
      $("#d-created").textContent = when(n.created);
      $("#d-origin").textContent = n.origin === "auto" ? "auto (created with a VM)" : "manual";
      $("#d-host").textContent = n.host;
      $("#d-id").textContent = n.id;
      $("#d-description").textContent = n.description || "—";
      $("#d-rates").textContent = rates(n);
      $("#d-count").textContent = `(${n.vm_count})`;
      if (n.drift) showDrift(n.drift);
      $("#vms tbody").replaceChildren(...n.vms.map((v) => el("tr", { "data-vm": v.vm_id, "data-nic": v.nic },
        el("td", {}, v.vm_name || "—"), el("td", { class: "mono" }, v.vm_id), el("td", {}, v.nic),
        el("td", { class: "mono" }, v.ip || "—"), el("td", { class: "mono" }, v.mac || "—"),
        el("td", {}, el("span", { class: `state ${v.state}` }, v.state)),
        el("td", { class: "mono" }, v.tap || "—"), el("td", {}, when(v.attached)), vmActions(v))));
      $("#no-vms").hidden = n.vms.length > 0;
      fillTargets(n.vms);
    }

    function vmActions(v) {
      const label = `${v.vm_name || v.vm_id} ${v.nic}`;
      const cell = el("td", { class: "actions" },
        el("button", { type: "button", class: "vm-diagnose", "aria-label": `Diagnose ${label}`,
          onclick: () => diagnose(`VM ${label}`, "GET",
            `/api/vms/${encodeURIComponent(host)}/${encodeURIComponent(v.vm_id)}/diagnose?nic=${encodeURIComponent(v.nic)}`) },
          "Diagnose"),
        el("button", { type: "button", class: "vm-metrics", "aria-label": `Metrics of ${label}`,
          onclick: () => { $("#mx-target").value = JSON.stringify([v.vm_id, v.nic]); showTab("metrics"); } }, "Metrics"));
      if (isAdmin) {
        cell.append(el("button", { type: "button", class: "vm-move", "aria-label": `Move ${label}`,
          onclick: () => openMove(v) }, "Move"));
      }
      return cell;
    }

    // ---- Diagnose: each check with its result, what fcnetd saw and what to do
    let diagAsk = 0;
    async function diagnose(title, method, target, body) {
      const ask = ++diagAsk;
      const box = $("#diag");
      box.hidden = false;
      box.setAttribute("aria-busy", "true");
      $("#diag-title").textContent = `Diagnose: ${title}`;
      $("#diag-summary").textContent = "Checking…";
      $("#diag-error").hidden = true;
      $("#diag-checks tbody").replaceChildren();
      try {
        const data = await api(method, target, body);
        if (ask !== diagAsk) return;
        const count = (r) => data.checks.filter((c) => c.result === r).length;
        $("#diag-summary").textContent = `${count("ok")} ok · ${count("warn")} warning${count("warn") === 1 ? "" : "s"} · ${count("fail")} failed`;
        $("#diag-checks tbody").replaceChildren(...data.checks.map(checkRow));
      } catch (e) {
        if (ask !== diagAsk) return;
        $("#diag-summary").textContent = "";
        $("#diag-error").textContent = e.message;
        $("#diag-error").hidden = false;
      } finally {
        if (ask === diagAsk) box.setAttribute("aria-busy", "false");
      }
    }

    function checkRow(c) {
      const detail = el("td", {}, c.detail);
      if (c.servers) {
        detail.append(c.servers.length ? el("ul", { class: "servers" }, ...c.servers.map((s) => el("li", { class: "mono" },
          `${s.server || "?"} (${s.mac}) offered ${s.address || "—"}${s.subnet ? ` in ${s.subnet}` : ""}${s.router ? `, router ${s.router}` : ""}`)))
          : el("p", { class: "hint" }, "No DHCP server answered."));
      }
      return el("tr", { class: `check ${c.result}`, "data-check": c.check },
        el("td", { class: "mono" }, c.check), el("td", {}, el("span", { class: `result ${c.result}` }, c.result)),
        detail, el("td", { class: "hint-cell" }, c.result === "ok" ? "" : c.hint));
    }

    // The probes (admins only: the boxes are not on a viewer's page) run in
    // one request; both ticked, both run at once and both rows are shown.
    $("#diagnose").addEventListener("click", () => {
      const ticked = (id) => { const box = $(id); return Boolean(box && box.checked); };
      const dhcp = ticked("#diag-probe");
      const isolation = ticked("#diag-isolation");
      const name = current ? current.name : "network";
      const probes = [dhcp && "DHCP", isolation && "isolation"].filter(Boolean);
      const title = `${name} with ${probes.join(" and ")} probe${probes.length > 1 ? "s" : ""}`;
      if (!probes.length) diagnose(name, "GET", `${base}/diagnose`);
      else diagnose(title, "POST", `${base}/probe`, { dhcp, isolation });
    });

    // ---- Move a VM NIC to another bridge and VLAN (admins)
    let moving = null;
    async function openMove(v) {
      moving = v;
      const form = $("#move-form");
      form.reset();
      $("#move-error").hidden = true;
      $("#move-text").textContent = `${v.vm_name || v.vm_id} (${v.nic}) is on ${current.name}. Move it to:`;
      const sel = $("#mv-bridge");
      try {
        const data = await api("GET", `/api/bridges?host=${encodeURIComponent(host)}`);
        sel.replaceChildren(...data.bridges.map((b) => el("option", { value: b }, b)));
        sel.value = current.bridge;
      } catch (e) {
        toast(e.message, "error", "Cannot list bridges");
        return;
      }
      $("#move-dialog").showModal();
      $("#mv-vlan").focus();
    }
    if (isAdmin) {
      $("#move-form").addEventListener("submit", async (ev) => {
        ev.preventDefault();
        const vlan = $("#mv-vlan").value.trim();
        const err = $("#move-error");
        if (vlan !== "" && !(Number.isInteger(Number(vlan)) && Number(vlan) >= 1 && Number(vlan) <= 4094)) {
          err.textContent = `VLAN ID: ${vlan} is out of range: 1-4094 (4095 is reserved), or empty for none.`;
          err.hidden = false;
          return;
        }
        try {
          const data = await api("POST", `/api/vms/${encodeURIComponent(host)}/${encodeURIComponent(moving.vm_id)}/move`,
            { nic: moving.nic, bridge: $("#mv-bridge").value, vlan });
          $("#move-dialog").close();
          toast(`${moving.vm_name || moving.vm_id} (${moving.nic}) moved to ${data.name}.`, "ok", "Moved");
          load();
        } catch (e) {
          err.textContent = e.message;
          err.hidden = false;
        }
      });
    }

    // ---- Metrics: rate charts of the network or one VM NIC, live while shown
    function showTab(which) {
      for (const tab of document.querySelectorAll("[role=tab]")) {
        const on = tab.id === `tab-${which}`;
        tab.setAttribute("aria-selected", String(on));
        tab.tabIndex = on ? 0 : -1;
        $(`#${tab.getAttribute("aria-controls")}`).hidden = !on;
      }
      if (which === "metrics") metrics.start(); else metrics.stop();
    }
    for (const tab of document.querySelectorAll("[role=tab]")) {
      tab.addEventListener("click", () => showTab(tab.id.slice(4)));
    }

    function fillTargets(vms) {
      const sel = $("#mx-target");
      const chosen = sel.value;
      sel.replaceChildren(el("option", { value: "" }, "The whole network"),
        ...vms.map((v) => el("option", { value: JSON.stringify([v.vm_id, v.nic]) }, `VM ${v.vm_name || v.vm_id} (${v.nic})`)));
      sel.value = [...sel.options].some((o) => o.value === chosen) ? chosen : "";
    }

    const metrics = (() => {
      const charts = {};
      let timer = null;
      let ask = 0;
      const last = (a) => a.length ? a[a.length - 1] : 0;
      const peak = (a) => Math.max(0, ...a);
      const series = (unit) => [{},
        { label: "Rx (from VMs)", stroke: "#2457c5", width: 2, value: (u, v) => v == null ? "—" : perSecond(v, unit) },
        { label: "Tx (to VMs)", stroke: "#067647", width: 2, value: (u, v) => v == null ? "—" : perSecond(v, unit) }];
      function draw(id, unit, target, x, rx, tx) {
        const box = $(`#${id}`);
        const data = [x, rx, tx];
        if (!charts[id]) {
          charts[id] = new uPlot({ width: Math.max(320, box.clientWidth), height: 220, series: series(unit),
            scales: { x: { time: true } },
            axes: [{}, { size: 80, values: (u, vals) => vals.map((v) => perSecond(v, unit)) }] }, data, box);
        } else {
          charts[id].setData(data);
        }
        // What the chart shows, and whose, as numbers a reader without eyes
        // can check (the browser tier compares them with the traffic it sends).
        box.dataset.target = target;
        box.dataset.samples = String(x.length);
        box.dataset.latestRx = String(Math.round(last(rx)));
        box.dataset.latestTx = String(Math.round(last(tx)));
        box.dataset.peakRx = String(Math.round(peak(rx)));
        box.dataset.peakTx = String(Math.round(peak(tx)));
      }
      async function refresh() {
        const mine = ++ask;
        const [vm, nic] = $("#mx-target").value ? JSON.parse($("#mx-target").value) : [];
        const q = new URLSearchParams(vm ? { vm, nic } : {});
        const note = $("#mx-note");
        try {
          const t = await api("GET", `${base}/traffic?${q}`);
          if (mine !== ask) return;
          note.hidden = true;
          const target = vm ? `${vm} ${nic}` : "network";
          draw("chart-bytes", "B", target, t.time, t.receive_bytes, t.transmit_bytes);
          draw("chart-packets", "pkt", target, t.time, t.receive_packets, t.transmit_packets);
          $("#mx-now").textContent = t.time.length ? `Now: Rx ${perSecond(last(t.receive_bytes))} · Tx ${perSecond(last(t.transmit_bytes))}` : "No samples yet.";
        } catch (e) {
          if (mine !== ask) return;
          note.textContent = e.message;
          note.hidden = false;
        }
      }
      return {
        start() { if (!timer) { refresh(); timer = setInterval(refresh, 10000); } },
        stop() { clearInterval(timer); timer = null; },
        refresh,
      };
    })();
    $("#mx-target").addEventListener("change", () => metrics.refresh());

    live((event) => {
      if (event.kind === "removed" && event.id === root.dataset.id) {
        deleted = true;  // for good: a network id is never used again
        say("This network was deleted.");
        metrics.stop();
        return;
      }
      if (event.kind === "drift" && (event.ids || []).includes(root.dataset.id)) showDrift(event);
      load();
    });
    everySample(() => { if (!deleted) load(); });
    load();
  }

  document.addEventListener("DOMContentLoaded", () => {
    dialogs();
    const page = document.body.dataset.page;
    if (page === "networks") networksPage();
    else if (page === "network") networkPage();
  });
})();
