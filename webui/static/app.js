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

  function live(onEvent) {
    let timer = null;
    const source = new EventSource("/api/events");
    source.onmessage = (msg) => {
      const event = JSON.parse(msg.data);
      clearTimeout(timer);
      timer = setTimeout(() => onEvent(event), 80);  // a burst of VM starts is one refresh
    };
    return source;
  }

  function dialogs() {
    for (const d of document.querySelectorAll("dialog")) {
      for (const b of d.querySelectorAll("button.cancel")) b.addEventListener("click", () => d.close());
    }
  }

  // ---- Networks page ------------------------------------------------------
  function networksPage() {
    const state = { search: "", type: "", host: "", sort: "created", order: "desc", page: 1 };
    let last = null;
    let multiHost = false;

    async function load() {
      const q = new URLSearchParams({ search: state.search, type: state.type, host: state.host, sort: state.sort,
                                      order: state.order, page: state.page });
      const data = await api("GET", `/api/networks?${q}`);
      last = data;
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
      return el("tr", { "data-name": n.name },
        el("td", {}, el("a", { href, class: "name" }, n.name)),
        ...(multiHost ? [el("td", {}, n.host)] : []),
        el("td", { class: "mono" }, n.bridge),
        el("td", {}, n.vlan ? String(n.vlan) : ""),
        el("td", { class: "mode" }, n.mode),
        el("td", { class: "num" }, String(n.vm_count)),
        el("td", {}, when(n.created)),
        actions);
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
    $("#prev").addEventListener("click", () => { state.page -= 1; load(); });
    $("#next").addEventListener("click", () => { state.page += 1; load(); });
    if (isAdmin) {
      $("#create-open").addEventListener("click", openCreate);
      $("#create-form").addEventListener("submit", submitCreate);
      $("#c-host").addEventListener("change", fillBridges);
      $("#c-vlan").addEventListener("input", updatePlaceholder);
      $("#c-bridge").addEventListener("change", updatePlaceholder);
    }
    live(() => load());
    load();
  }

  // ---- Network detail page ------------------------------------------------
  function networkPage() {
    const root = $("#detail");
    const url = `/api/networks/${encodeURIComponent(root.dataset.host)}/${encodeURIComponent(root.dataset.id)}`;

    // The banner says why the data below may be old (fcnetd not running, the
    // network deleted); it shows the newest answer's word: a later answer
    // that succeeded takes it away, and an older one arriving late is dropped.
    const banner = $("#d-gone");
    function say(text) { banner.textContent = text; banner.hidden = !text; }
    let asked = 0;
    let deleted = false;

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
      $("#d-count").textContent = `(${n.vm_count})`;
      $("#vms tbody").replaceChildren(...n.vms.map((v) => el("tr", {},
        el("td", {}, v.vm_name || "—"), el("td", { class: "mono" }, v.vm_id), el("td", {}, v.nic),
        el("td", { class: "mono" }, v.ip || "—"), el("td", { class: "mono" }, v.mac || "—"),
        el("td", {}, el("span", { class: `state ${v.state}` }, v.state)),
        el("td", { class: "mono" }, v.tap || "—"), el("td", {}, when(v.attached)))));
      $("#no-vms").hidden = n.vms.length > 0;
    }
    live((event) => {
      if (event.kind === "removed" && event.id === root.dataset.id) {
        deleted = true;  // for good: a network id is never used again
        say("This network was deleted.");
        return;
      }
      load();
    });
    load();
  }

  document.addEventListener("DOMContentLoaded", () => {
    dialogs();
    const page = document.body.dataset.page;
    if (page === "networks") networksPage();
    else if (page === "network") networkPage();
  });
})();
