// Dispatcher admin UI: plain JavaScript, no build step, no external requests.
// Every data call sends the dispatcher token from sessionStorage; a 401 returns to the sign-in form.
"use strict";

(() => {
  const TOKEN_KEY = "routing.admin.token";
  const POLL_MS = 2500;
  const STALE_PING_S = 120;
  const LAYERS = [
    ["ingest", "#94a3b8"], ["queue_wait", "#facc15"], ["inference", "#a855f7"], ["search", "#2563eb"], ["post", "#14b8a6"],
  ];
  const PALETTE = ["#2563eb", "#db2777", "#059669", "#7c3aed", "#ea580c", "#0891b2", "#65a30d", "#9333ea", "#b45309", "#0f766e"];
  const ROAD_STYLE = {
    motorway: [3.4, "#f4b860"], motorway_link: [2.2, "#f4b860"], trunk: [3.2, "#f6c873"], trunk_link: [2, "#f6c873"],
    primary: [2.8, "#fbd98a"], primary_link: [1.8, "#fbd98a"], secondary: [2.4, "#fdf0b5"], secondary_link: [1.6, "#fdf0b5"],
    tertiary: [2, "#ffffff"], tertiary_link: [1.5, "#ffffff"],
  };
  const MINOR_ROAD = [1.4, "#ffffff"];
  const M_PER_DEG_LAT = 110_574;

  const $ = (id) => document.getElementById(id);
  const state = {
    overview: null, network: null, drivers: [], requests: [], selected: null, selectedRequest: null,
    routes: new Map(), timer: null, inFlight: false, again: false, mode: null, pickEdge: null, bbox: null,
    models: null, lastUpdate: null, profiles: null, profilesEpoch: null, profilesLoading: false,
  };
  const HOLDOUT_LABELS = {
    base: "Base model", global_factor: "One global factor", class_least_squares: "Per road class (least squares)",
    edge_means: "Per-road means", gnn: "GNN (learned profile)",
  };

  // -- HTTP -----------------------------------------------------------------------------------

  class AuthLost extends Error {}
  class ApiError extends Error {
    constructor(status, body) {
      super(describeError(status, body));
      this.status = status;
      this.body = body;
    }
  }

  function describeError(status, body) {
    const detail = body && body.detail;
    if (Array.isArray(detail) && detail.length) {
      return detail.map((d) => {
        const where = Array.isArray(d.loc) ? d.loc.filter((p) => p !== "body").join(".") : "";
        return (where ? where + ": " : "") + (d.msg || d.kind || "error");
      }).join("; ");
    }
    if (typeof detail === "string") return detail;
    if (body && body.message) return body.message;
    return `HTTP ${status}`;
  }

  async function api(path, options = {}) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) {
      showLogin("");
      throw new AuthLost();
    }
    const headers = { Authorization: `Bearer ${token}`, Accept: "application/json" };
    const init = { method: options.method || "GET", headers, cache: "no-store" };
    if (options.body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (err) {
      throw new ApiError(0, { message: "the service did not answer (" + err.message + ")" });
    }
    let body = null;
    try {
      body = await res.json();
    } catch (err) {
      body = null;
    }
    if (res.status === 401) {
      // Calls in flight together all get the 401: the first one signs out and says why.
      if (sessionStorage.getItem(TOKEN_KEY) === token) {
        const inApp = !$("app-view").hidden;
        sessionStorage.removeItem(TOKEN_KEY);
        showLogin(inApp ? "Signed out: the token is no longer accepted (" + describeError(401, body) + ")."
          : "Token rejected: " + describeError(401, body) + ".");
      }
      throw new AuthLost();
    }
    if (!res.ok) throw new ApiError(res.status, body);
    return body;
  }

  // -- sign-in --------------------------------------------------------------------------------

  function showLogin(message) {
    stopPolling();
    $("app-view").hidden = true;
    $("login-view").hidden = false;
    $("login-error").textContent = message || "";
    $("token").value = "";
    $("token").focus();
  }

  async function enterApp() {
    const overview = await api("/v1/admin/overview");
    $("login-view").hidden = true;
    $("app-view").hidden = false;
    applyOverview(overview);
    scheduleDraw();
    await Promise.all([loadNetwork(overview), loadModels(), loadProfiles()]);
    await refresh();
    startPolling();
  }

  async function onLogin(event) {
    event.preventDefault();
    const token = $("token").value.trim();
    if (!token) {
      $("login-error").textContent = "Enter a dispatcher token.";
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    try {
      await enterApp();
    } catch (err) {
      if (err instanceof AuthLost) return;
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin(err.status === 403 ? "This token is not a dispatcher token: the admin UI needs one."
        : "Cannot sign in: " + err.message);
    }
  }

  function signOut() {
    sessionStorage.removeItem(TOKEN_KEY);
    state.selected = null;
    showLogin("Signed out.");
  }

  // -- polling --------------------------------------------------------------------------------

  function startPolling() {
    stopPolling();
    state.timer = setInterval(refresh, POLL_MS);
  }

  function stopPolling() {
    if (state.timer) clearInterval(state.timer);
    state.timer = null;
  }

  async function refresh() {
    if (state.inFlight) {
      state.again = true;
      return;
    }
    state.inFlight = true;
    try {
      const [overview, drivers, requests] = await Promise.all([
        api("/v1/admin/overview"), api("/v1/admin/drivers"), api("/v1/admin/requests?limit=30"),
      ]);
      if ($("app-view").hidden) return;
      applyOverview(overview);
      applyDrivers(drivers.drivers);
      applyRequests(requests.requests);
      if (overview.traffic && overview.traffic.epoch !== state.profilesEpoch) loadProfiles().catch(() => {});
      setLive(true, "live · updated " + clock(overview.now));
    } catch (err) {
      if (!(err instanceof AuthLost)) setLive(false, "update failed: " + err.message);
    } finally {
      state.inFlight = false;
      if (state.again) {
        state.again = false;
        setTimeout(refresh, 0);
      }
    }
  }

  function setLive(ok, text) {
    $("live-dot").className = "dot " + (ok ? "ok" : "bad");
    $("live-text").textContent = text;
  }

  // -- formatting -----------------------------------------------------------------------------

  function clock(iso) {
    if (!iso) return "–";
    return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  }

  function hm(iso) {
    return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
  }

  function duration(seconds) {
    const s = Math.abs(seconds);
    if (s < 60) return `${Math.round(s)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
    return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 0) return "just now";
    if (seconds < 60) return `${Math.round(seconds)} s ago`;
    if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
    if (seconds < 86400) return `${(seconds / 3600).toFixed(1)} h ago`;
    return `${Math.round(seconds / 86400)} d ago`;
  }

  function ms(value) {
    if (value === null || value === undefined) return "–";
    return value < 10 ? `${value.toFixed(1)} ms` : `${Math.round(value)} ms`;
  }

  function pct(value) {
    return value === null || value === undefined ? "–" : `${Math.round(value * 1000) / 10} %`;
  }

  function num(value, digits) {
    return value === null || value === undefined ? "–" : value.toFixed(digits);
  }

  function shortId(id) {
    return id ? String(id).slice(0, 8) : "–";
  }

  function colorOf(driverId) {
    let h = 0;
    for (const ch of driverId) h = (h * 31 + ch.codePointAt(0)) >>> 0;
    return PALETTE[h % PALETTE.length];
  }

  // Builds DOM nodes; text is always set as text (driver and stop ids come from clients).
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "style") node.setAttribute("style", value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function feedback(id, kind, text) {
    const node = $(id);
    node.className = "feedback " + kind;
    node.textContent = text;
  }

  // -- overview and KPIs ----------------------------------------------------------------------

  function applyOverview(ov) {
    const previousMap = state.overview && state.overview.map ? state.overview.map.id : null;
    state.overview = ov;
    const k = ov.kpis;
    $("h-map").textContent = ov.map ? `${ov.map.name} (#${ov.map.id})` : "no map loaded";
    $("h-epoch").textContent = ov.traffic ? String(ov.traffic.epoch) : "–";
    $("h-model").textContent = `${shortId(ov.model.version)} · ${ov.model.backend}`;
    $("h-mode").textContent = ov.mode;
    $("k-rps").textContent = k.requests_per_s === null ? "–" : num(k.requests_per_s, k.requests_per_s < 10 ? 2 : 1);
    $("k-rps-b").textContent = `route requests, last ${Math.round(k.window_s)} s · ${k.total_requests} answered since start`;
    $("k-p50").textContent = ms(k.latency_p50_ms);
    $("k-p99").textContent = ms(k.latency_p99_ms);
    $("k-cache").textContent = pct(k.cache_hit_ratio);
    $("k-cache-b").textContent = `of ${k.cache_lookups} cache lookups, last 60 s`;
    $("k-batch").textContent = num(k.mean_batch_size, 2);
    $("k-batch-b").textContent = `problems per model batch, ${k.batches_reported} computed answers, last 60 s`;
    $("k-queue").textContent = ov.queue.depth === null || ov.queue.depth === undefined ? "–" : String(ov.queue.depth);
    $("k-queue-b").textContent = `requests waiting now (${ov.queue.adapter || "queue"})`;
    $("k-workers").textContent = String(ov.workers.online);
    $("k-workers-b").textContent = ov.workers.basis;
    $("k-model").textContent = shortId(ov.model.version);
    $("k-model").title = ov.model.version;
    $("k-model-b").textContent = `backend ${ov.model.backend}${ov.model.ready ? "" : " (warming)"}`;
    $("k-epoch").textContent = ov.traffic ? String(ov.traffic.epoch) : "–";
    $("k-epoch-b").textContent = ov.traffic ? `${ov.traffic.live.length} edges with live speeds` : "no map";
    $("k-ontime").textContent = pct(ov.on_time.share);
    $("k-ontime-b").textContent = `of ${ov.on_time.stops} planned stops (${ov.on_time.late} late), current routes`;
    drawChart(ov.latency_series);
    if (ov.map && previousMap !== null && previousMap !== ov.map.id) loadNetwork(ov).catch(ignoreAuth);
    scheduleDraw();
  }

  function ignoreAuth(err) {
    if (!(err instanceof AuthLost)) setLive(false, err.message);
  }

  // -- latency chart --------------------------------------------------------------------------

  function drawChart(series) {
    const canvas = $("latency-chart");
    const ctx = fitCanvas(canvas);
    const w = canvas.clientWidth;
    const h = canvas.clientHeight;
    ctx.clearRect(0, 0, w, h);
    const points = (series && series.points) || [];
    const span = 600;
    const left = 44, right = 8, top = 8, bottom = 20;
    const values = points.flatMap((p) => [p.p50_ms, p.p99_ms]).filter((v) => v !== null);
    canvas.dataset.points = String(points.filter((p) => p.p99_ms !== null).length);
    const ymax = niceCeil(Math.max(1, ...values));
    const x = (t) => left + (w - left - right) * (1 + t / span);
    const y = (v) => top + (h - top - bottom) * (1 - v / ymax);
    ctx.font = "11px system-ui, sans-serif";
    ctx.strokeStyle = "#e5e7eb";
    ctx.fillStyle = "#6b7480";
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    const ticks = ymax / Math.pow(10, Math.floor(Math.log10(ymax))) === 2 ? 4 : 5;
    for (let i = 0; i <= ticks; i++) {
      const v = (ymax * i) / ticks;
      ctx.beginPath();
      ctx.moveTo(left, Math.round(y(v)) + 0.5);
      ctx.lineTo(w - right, Math.round(y(v)) + 0.5);
      ctx.stroke();
      ctx.fillText(v >= 10 ? `${Math.round(v)} ms` : `${v.toFixed(1)} ms`, left - 4, y(v));
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (const [t, label] of [[-600, "−10 min"], [-300, "−5 min"], [0, "now"]]) {
      ctx.fillText(label, Math.min(Math.max(x(t), left + 18), w - right - 12), h - bottom + 5);
    }
    if (!values.length) {
      ctx.textBaseline = "middle";
      ctx.fillText("no route requests in the last 10 minutes", left + (w - left - right) / 2, top + (h - top - bottom) / 2);
      return;
    }
    for (const [key, color] of [["p50_ms", "#2563eb"], ["p99_ms", "#f97316"]]) {
      ctx.strokeStyle = color;
      ctx.fillStyle = color;
      ctx.lineWidth = 2;
      ctx.beginPath();
      let open = false;
      for (const p of points) {
        if (p[key] === null) {
          open = false;
          continue;
        }
        if (open) ctx.lineTo(x(p.t), y(p[key]));
        else ctx.moveTo(x(p.t), y(p[key]));
        open = true;
      }
      ctx.stroke();
      for (const p of points) {
        if (p[key] === null) continue;
        ctx.beginPath();
        ctx.arc(x(p.t), y(p[key]), 2, 0, Math.PI * 2);
        ctx.fill();
      }
    }
  }

  function niceCeil(v) {
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function fitCanvas(canvas) {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(canvas.clientWidth * dpr));
    const h = Math.max(1, Math.round(canvas.clientHeight * dpr));
    if (canvas.width !== w || canvas.height !== h) {
      canvas.width = w;
      canvas.height = h;
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    return ctx;
  }

  // -- drivers --------------------------------------------------------------------------------

  function statusBadge(driver) {
    const r = driver.route;
    if (driver.status === "late") return el("span", { class: "badge late" }, `late (${r.late_left})`);
    if (driver.status === "on time") return el("span", { class: "badge ok" }, "on time");
    if (driver.status === "done") return el("span", { class: "badge done" }, "all passed");
    return el("span", { class: "badge none" }, "no route");
  }

  function applyDrivers(drivers) {
    state.drivers = drivers;
    $("drivers-count").textContent = `${drivers.length} driver${drivers.length === 1 ? "" : "s"}`;
    const body = $("drivers-body");
    body.replaceChildren();
    if (!drivers.length) body.append(el("tr", { class: "empty" }, el("td", { colspan: 5 }, "No drivers yet.")));
    for (const d of drivers) {
      const r = d.route;
      const ping = d.position;
      const stale = ping && ping.age_s > STALE_PING_S;
      body.append(el("tr", {
        "data-id": d.driver_id, class: d.driver_id === state.selected ? "selected" : null,
        onclick: () => selectDriver(d.driver_id),
      },
      el("td", {}, el("span", { class: "swatch", style: `background:${colorOf(d.driver_id)}` }), d.driver_id),
      el("td", { class: stale ? "stale" : null, title: ping ? ping.timestamp : "no ping yet" }, ping ? age(ping.age_s) : "–"),
      el("td", {}, r ? `${r.stops_left} / ${r.stops_total}` : "–"),
      el("td", { title: r && r.next_eta ? `stop ${r.next_stop}` : null }, r && r.next_eta ? clock(r.next_eta) : "–"),
      el("td", {}, statusBadge(d))));
      if (r && !state.routes.has(r.route_id)) loadRoute(r.route_id);
    }
    $("map").dataset.drivers = String(drivers.filter((d) => d.position).length);
    const current = new Set(drivers.filter((d) => d.route).map((d) => d.route.route_id));
    for (const id of [...state.routes.keys()]) if (!current.has(id)) state.routes.delete(id);
    if (state.selected && !drivers.some((d) => d.driver_id === state.selected)) state.selected = null;
    renderDriverDetail();
    scheduleDraw();
  }

  function selectDriver(driverId) {
    if (state.selected !== driverId) feedback("replan-feedback", "", "");
    state.selected = driverId;
    for (const row of $("drivers-body").querySelectorAll("tr[data-id]")) {
      row.classList.toggle("selected", row.dataset.id === driverId);
    }
    renderDriverDetail();
    scheduleDraw();
  }

  function renderDriverDetail() {
    const box = $("driver-detail");
    const d = state.drivers.find((x) => x.driver_id === state.selected);
    if (!d) {
      box.hidden = true;
      return;
    }
    box.hidden = false;
    box.dataset.driver = d.driver_id;
    $("dd-title").textContent = d.driver_id;
    const r = d.route;
    const ping = d.position ? `last ping ${age(d.position.age_s)} at ${d.position.lat.toFixed(5)}, ${d.position.lon.toFixed(5)}` : "no ping yet";
    $("dd-sub").textContent = r
      ? `route ${shortId(r.route_id)} planned ${clock(r.received_at)} · epoch ${r.traffic_epoch} · cache ${r.cache} · `
        + `${(r.total_distance_m / 1000).toFixed(1)} km, ${duration(r.total_duration_s)} · ${ping}`
      : `no planned route · ${ping}`;
    $("replan").disabled = !r;
    const rows = $("dd-stops");
    rows.replaceChildren();
    if (!r) return;
    for (const s of r.stops) {
      const win = s.window ? `${hm(s.window.earliest)}–${hm(s.window.latest)}` : "—";
      const late = s.late_s > 0 ? `${duration(s.late_s)} late` : "on time";
      rows.append(el("tr", { class: [s.late_s > 0 ? "late" : "", s.passed ? "passed" : ""].join(" ").trim() || null, "data-stop": s.id },
        el("td", {}, String(s.seq)), el("td", {}, s.id), el("td", {}, clock(s.arrival) + (s.passed ? " (passed)" : "")),
        el("td", {}, win), el("td", {}, late)));
    }
  }

  async function replanSelected() {
    const driverId = state.selected;
    if (!driverId) return;
    const button = $("replan");
    button.disabled = true;
    feedback("replan-feedback", "busy", `Re-planning ${driverId}…`);
    try {
      const res = await api(`/v1/admin/drivers/${encodeURIComponent(driverId)}/replan`, { method: "POST", body: {} });
      const route = res.route;
      const dropped = res.dropped.length ? ` (${res.dropped.length} passed stop${res.dropped.length === 1 ? "" : "s"} left out)` : "";
      feedback("replan-feedback", "ok", `Re-planned ${res.planned.length} stops from the last position${dropped}: `
        + `route ${shortId(route.route_id)}, ${route.late_stops.length} late, epoch ${route.versions.traffic_epoch}, cache ${route.cache}.`);
      await refresh();
    } catch (err) {
      if (!(err instanceof AuthLost)) feedback("replan-feedback", "error", "Re-plan failed: " + err.message);
    } finally {
      button.disabled = false;
    }
  }

  async function loadRoute(routeId) {
    state.routes.set(routeId, null); // loading
    try {
      const detail = await api(`/v1/admin/requests/${encodeURIComponent(routeId)}`);
      const legs = ((detail.response && detail.response.legs) || []).map((leg) => projectLine(decodePolyline(leg.geometry, 6)));
      state.routes.set(routeId, { legs });
      scheduleDraw();
    } catch (err) {
      state.routes.delete(routeId);
      ignoreAuth(err);
    }
  }

  // -- recent requests ------------------------------------------------------------------------

  function layerBar(timings) {
    const bar = el("div", { class: "layers" });
    if (!timings) return bar;
    const total = LAYERS.reduce((sum, [key]) => sum + (timings[key] || 0), 0);
    bar.title = LAYERS.map(([key]) => `${key.replace("_", " ")} ${ms(timings[key] || 0)}`).join(" · ");
    if (total <= 0) return bar;
    for (const [key, color] of LAYERS) {
      const share = (timings[key] || 0) / total;
      if (share > 0) bar.append(el("i", { style: `width:${(share * 100).toFixed(2)}%;background:${color}` }));
    }
    return bar;
  }

  function applyRequests(requests) {
    state.requests = requests;
    const body = $("requests-body");
    body.replaceChildren();
    if (!requests.length) body.append(el("tr", { class: "empty" }, el("td", { colspan: 8 }, "No requests yet.")));
    for (const r of requests) {
      const ok = r.status === 200;
      body.append(el("tr", {
        "data-id": r.route_id, class: r.route_id === state.selectedRequest ? "selected" : null,
        onclick: () => showRequest(r.route_id),
      },
      el("td", { title: r.received_at }, clock(r.received_at)),
      el("td", {}, r.driver_id),
      el("td", { class: "num" }, String(r.n_stops)),
      el("td", {}, el("span", { class: "badge " + (ok ? "ok" : "err") }, ok ? "200" : `${r.status} ${r.error_kind || ""}`.trim())),
      el("td", {}, r.cache ? el("span", { class: "badge " + r.cache }, r.cache) : "–"),
      el("td", { class: "num" }, r.versions.traffic_epoch === null ? "–" : String(r.versions.traffic_epoch)),
      el("td", { class: "num" }, r.timings_ms ? ms(r.timings_ms.total) : "–"),
      el("td", {}, layerBar(r.timings_ms))));
    }
  }

  async function showRequest(routeId) {
    state.selectedRequest = routeId;
    for (const row of $("requests-body").querySelectorAll("tr[data-id]")) {
      row.classList.toggle("selected", row.dataset.id === routeId);
    }
    const box = $("request-detail");
    box.hidden = false;
    box.replaceChildren(el("p", { class: "muted" }, "Loading…"));
    try {
      renderRequestDetail(await api(`/v1/admin/requests/${encodeURIComponent(routeId)}`));
    } catch (err) {
      if (!(err instanceof AuthLost)) box.replaceChildren(el("p", { class: "feedback error" }, err.message));
    }
  }

  function renderRequestDetail(d) {
    const box = $("request-detail");
    box.dataset.route = d.route_id;
    const t = d.timings_ms || {};
    const req = d.request || {};
    const res = d.response;
    const layerTotal = Math.max(1e-9, ...LAYERS.map(([key]) => t[key] || 0));
    const timings = el("table", { class: "table compact" },
      el("thead", {}, el("tr", {}, el("th", {}, "Layer"), el("th", { class: "num" }, "Time"), el("th", {}, ""))),
      el("tbody", {}, LAYERS.map(([key, color]) => el("tr", {},
        el("td", {}, key.replace("_", " ")), el("td", { class: "num" }, ms(t[key] || 0)),
        el("td", {}, el("span", { class: "bar", style: `width:${Math.max(1, 120 * (t[key] || 0) / layerTotal)}px;background:${color}` })))),
      el("tr", {}, el("td", {}, el("strong", {}, "total")), el("td", { class: "num" }, el("strong", {}, ms(t.total))), el("td", {}, ""))));
    const end = typeof req.end === "string" ? req.end : req.end ? `${req.end.lat}, ${req.end.lon}` : "return";
    const facts = [
      ["Route", d.route_id], ["Driver", d.driver_id], ["Received", new Date(d.received_at).toLocaleString()],
      ["Status", d.status === 200 ? "200 answered" : `${d.status} ${d.error_kind || ""}`], ["Cache", d.cache || "–"],
      ["Versions", `graph ${d.versions.graph ?? "–"} · epoch ${d.versions.traffic_epoch ?? "–"} · model ${shortId(d.versions.model)} · ${d.versions.backend || "–"}`],
      ["Stops", `${d.n_stops} · end ${end} · depart ${req.depart_at ? clock(req.depart_at) : "at request time"}`],
    ];
    if (res) {
      facts.push(["Served by", `${res.served_by.worker} · batch of ${res.served_by.batch_size} · ${res.served_by.backend}`]);
      facts.push(["Answer", `${(res.total_distance_m / 1000).toFixed(2)} km, ${duration(res.total_duration_s)}, `
        + `${res.feasible ? "feasible" : "windows missed"}${res.late_stops.length ? ", late: " + res.late_stops.join(", ") : ""}`]);
      facts.push(["Order", res.order.join(" → ")]);
    }
    box.replaceChildren(
      el("div", { class: "panel-head" }, el("h3", {}, `Request ${shortId(d.route_id)}`),
        el("div", { class: "map-tools" },
          el("button", { type: "button", class: "ghost", onclick: () => selectDriver(d.driver_id) }, "Show driver"),
          el("button", { type: "button", class: "ghost", "aria-label": "Close", onclick: closeRequest }, "Close"))),
      el("div", { class: "grid" },
        el("dl", {}, facts.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
        timings));
  }

  function closeRequest() {
    state.selectedRequest = null;
    $("request-detail").hidden = true;
    for (const row of $("requests-body").querySelectorAll("tr.selected")) row.classList.remove("selected");
  }

  // -- actions --------------------------------------------------------------------------------

  async function flushCache() {
    const button = $("flush");
    button.disabled = true;
    feedback("flush-feedback", "busy", "Flushing…");
    try {
      const res = await api("/v1/admin/cache/flush", { method: "POST" });
      feedback("flush-feedback", "ok", `Flushed ${res.flushed} cached route${res.flushed === 1 ? "" : "s"} at ${clock(new Date().toISOString())}.`);
      await refresh();
    } catch (err) {
      if (!(err instanceof AuthLost)) feedback("flush-feedback", "error", "Flush failed: " + err.message);
    } finally {
      button.disabled = false;
    }
  }

  async function applyTraffic(event) {
    event.preventDefault();
    const form = $("traffic-form");
    const target = form.querySelector("input[name=target]:checked").value;
    const body = { speed_factor: Number($("t-factor").value), ttl_s: Math.round(Number($("t-ttl").value) * 60) };
    if (!(body.ttl_s > 0)) {
      feedback("traffic-feedback", "error", "Give a duration in minutes.");
      return;
    }
    if (target === "edge") {
      const edge = Number.parseInt($("t-edge").value, 10);
      if (!Number.isInteger(edge) || edge < 0) {
        feedback("traffic-feedback", "error", "Enter an edge id, or pick a road on the map.");
        return;
      }
      if (state.network && edge >= state.network.edges) {
        feedback("traffic-feedback", "error", `edge: edge must be in 0..${state.network.edges - 1} on ${state.network.name}.`);
        return;
      }
      body.edge = edge;
    } else {
      if (!state.bbox) {
        feedback("traffic-feedback", "error", "Draw an area on the map first.");
        return;
      }
      body.bbox = state.bbox;
    }
    const button = $("apply-traffic");
    button.disabled = true;
    feedback("traffic-feedback", "busy", "Applying…");
    try {
      const res = await api("/v1/admin/traffic", { method: "POST", body });
      feedback("traffic-feedback", "ok", `Traffic epoch ${res.previous_epoch} → ${res.traffic_epoch}: ${res.edges} road segment`
        + `${res.edges === 1 ? "" : "s"} at ${Math.round(res.speed_factor * 100)} % of free-flow speed until ${hm(res.expires_at)}. `
        + "Routes requested from now on are planned with it.");
      await refresh();
    } catch (err) {
      if (!(err instanceof AuthLost)) feedback("traffic-feedback", "error", "Traffic update refused: " + err.message);
    } finally {
      button.disabled = false;
    }
  }

  async function loadModels() {
    const info = await api("/v1/admin/models");
    state.models = info;
    const backend = $("m-backend");
    backend.replaceChildren(...info.backends.map((b) => el("option", { value: b, selected: b === info.current.backend }, b)));
    const checkpoint = $("m-checkpoint");
    checkpoint.replaceChildren(...info.checkpoints.map((p) => el("option", { value: p, selected: p === info.default_checkpoint },
      p.split("/").pop() + (p === info.default_checkpoint ? " (committed)" : ""))));
    $("activate-model").disabled = !info.hot_swap;
    if (!info.hot_swap) $("model-note").textContent = "Services mode: the workers run the model; restart them with the new one.";
  }

  async function activateModel(event) {
    event.preventDefault();
    const button = $("activate-model");
    button.disabled = true;
    const body = { backend: $("m-backend").value };
    if ($("m-checkpoint").value) body.checkpoint = $("m-checkpoint").value;
    feedback("model-feedback", "busy", `Loading and warming ${body.backend}… requests keep using the current model.`);
    try {
      const res = await api("/v1/admin/model", { method: "POST", body });
      feedback("model-feedback", "ok", `Now serving model ${shortId(res.version)} on ${res.backend}.`);
      await refresh();
    } catch (err) {
      if (!(err instanceof AuthLost)) feedback("model-feedback", "error", "Activation failed: " + err.message);
    } finally {
      button.disabled = !(state.models && state.models.hot_swap);
    }
  }

  // -- travel times (learned profiles) -------------------------------------------------------

  function day(iso) {
    if (!iso) return "?";
    return String(iso).slice(0, 10);
  }

  function pct1(value) {
    return value === null || value === undefined ? "–" : `${(value * 100).toFixed(1)} %`;
  }

  function bias(ratio) {
    if (ratio === null || ratio === undefined) return "–";
    const d = Math.round((ratio - 1) * 1000) / 10;
    return (d > 0 ? "+" : d < 0 ? "−" : "±") + Math.abs(d).toFixed(1) + " %";
  }

  async function loadProfiles() {
    if (state.profilesLoading) return;
    state.profilesLoading = true;
    try {
      const info = await api("/v1/admin/travel-profile");
      state.profiles = info;
      state.profilesEpoch = info.traffic_epoch;
      applyProfiles(info);
    } catch (err) {
      if (err instanceof AuthLost) throw err;
      if (err.status === 503) {
        $("tp-count").textContent = "no map loaded";
        return;
      }
      feedback("profile-feedback", "error", "Cannot read the travel-time profiles: " + err.message);
    } finally {
      state.profilesLoading = false;
    }
  }

  function applyProfiles(info) {
    const profiles = info.profiles || [];
    const inForce = profiles.find((p) => p.version === info.in_force) || null;
    // What the table shows: the profile in force, else the newest stored one.
    const shown = inForce || profiles[0] || null;
    $("tp-count").textContent = profiles.length ? `${profiles.length} stored profile${profiles.length === 1 ? "" : "s"}` : "";
    $("tp-none").hidden = profiles.length > 0;
    $("tp-facts").dataset.version = info.in_force || "";
    if (inForce) {
      $("tp-version").textContent = inForce.version;
      $("tp-source").textContent = (inForce.source === "pings" ? "driver pings" : "real trips")
        + (inForce.timezone ? ` · ${inForce.timezone}` : "");
      $("tp-period").textContent = inForce.trained_from || inForce.trained_until
        ? `${day(inForce.trained_from)} → ${day(inForce.trained_until)}` : "–";
      $("tp-trips").textContent = inForce.trips_on_map === null || inForce.trips_on_map === undefined ? "–"
        : Number(inForce.trips_on_map).toLocaleString("en-US") + " on this map";
    } else {
      $("tp-version").textContent = info.in_force ? info.in_force : "base model (none)";
      for (const id of ["tp-source", "tp-period", "tp-trips"]) $(id).textContent = "–";
    }

    const select = $("tp-select");
    const keep = select.dataset.touched === "1" ? select.value : null;
    const options = profiles.map((p) => el("option", { value: p.version },
      `${p.version} · ${day(p.created_at)}${p.version === info.in_force ? " (in force)" : ""}`));
    options.push(el("option", { value: "" }, "base model (none)" + (info.in_force ? "" : " (in force)")));
    select.replaceChildren(...options);
    const wanted = keep !== null && [...select.options].some((o) => o.value === keep) ? keep
      : (profiles.find((p) => p.version !== info.in_force) || { version: info.in_force ? "" : null }).version;
    select.value = wanted === null || wanted === undefined ? (info.in_force || "") : wanted;
    $("activate-profile").disabled = profiles.length === 0;

    const body = $("tp-holdout");
    const holdout = shown ? shown.holdout || {} : {};
    const methods = Object.keys(holdout);
    if (!methods.length) {
      $("tp-eval-basis").textContent = "";
      body.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: 5 },
        shown ? "This profile has no evaluation on held-back trips." : "No evaluation yet.")));
      return;
    }
    const trips = shown.holdout_trips || (holdout.gnn && holdout.gnn.trips);
    $("tp-eval-basis").textContent = `· ${shown.version}${shown === inForce ? "" : " (not in force)"}`
      + (trips ? ` · ${Number(trips).toLocaleString("en-US")} trips` : "")
      + (shown.holdout_from ? ` from ${day(shown.holdout_from)}` : "");
    body.replaceChildren(...methods.map((m) => {
      const r = holdout[m];
      return el("tr", { class: m === "gnn" ? "gnn" : null, "data-method": m },
        el("td", {}, HOLDOUT_LABELS[m] || m),
        el("td", { class: "num" }, pct1(r.median_ape)),
        el("td", { class: "num" }, pct1(r.mape)),
        el("td", { class: "num", title: r.bias === null || r.bias === undefined ? null
          : `median of predicted / actual time: ${num(r.bias, 3)}` }, bias(r.bias)),
        el("td", { class: "num" }, pct1(r.p10_p90_coverage)));
    }));
  }

  async function activateProfile(event) {
    event.preventDefault();
    const select = $("tp-select");
    const version = select.value || null;
    const button = $("activate-profile");
    button.disabled = true;
    feedback("profile-feedback", "busy", version ? `Switching to ${version}…` : "Switching to the base model…");
    try {
      const res = await api("/v1/admin/travel-profile/activate", { method: "POST", body: { version } });
      select.dataset.touched = "0";
      state.profiles = res;
      state.profilesEpoch = res.traffic_epoch;
      applyProfiles(res);
      feedback("profile-feedback", "ok", `Travel times now from ${res.in_force ? "profile " + res.in_force : "the base model"}`
        + ` (traffic epoch ${res.traffic_epoch}). Routes requested from now on use them.`);
      await refresh();
    } catch (err) {
      if (!(err instanceof AuthLost)) feedback("profile-feedback", "error", "Switch refused: " + err.message);
    } finally {
      button.disabled = !(state.profiles && state.profiles.profiles && state.profiles.profiles.length);
    }
  }

  // -- map: data ------------------------------------------------------------------------------

  const proj = { lat0: 0, lon0: 0, mx: 1 };

  function setProjection(bbox) {
    proj.lat0 = (bbox[0] + bbox[2]) / 2;
    proj.lon0 = (bbox[1] + bbox[3]) / 2;
    proj.mx = M_PER_DEG_LAT * Math.cos((proj.lat0 * Math.PI) / 180);
  }

  const project = (lat, lon) => [(lon - proj.lon0) * proj.mx, (lat - proj.lat0) * M_PER_DEG_LAT];
  const unproject = (x, y) => [proj.lat0 + y / M_PER_DEG_LAT, proj.lon0 + x / proj.mx];

  function projectLine(points) {
    const out = new Float64Array(points.length * 2);
    points.forEach(([lat, lon], i) => {
      const [x, y] = project(lat, lon);
      out[2 * i] = x;
      out[2 * i + 1] = y;
    });
    return out;
  }

  function decodePolyline(text, precision) {
    const factor = Math.pow(10, precision);
    const out = [];
    let index = 0, lat = 0, lon = 0;
    while (index < text.length) {
      const deltas = [0, 0];
      for (let k = 0; k < 2; k++) {
        let result = 0, shift = 0, byte;
        do {
          byte = text.charCodeAt(index++) - 63;
          result |= (byte & 0x1f) << shift;
          shift += 5;
        } while (byte >= 0x20 && index < text.length);
        deltas[k] = result & 1 ? ~(result >> 1) : result >> 1;
      }
      lat += deltas[0];
      lon += deltas[1];
      out.push([lat / factor, lon / factor]);
    }
    return out;
  }

  async function loadNetwork(overview) {
    if (!overview || !overview.map) return;
    const net = await api("/v1/admin/network");
    setProjection(net.bbox);
    const roads = net.roads.map(([edge, reverse, cls, line]) => ({
      edge, reverse, cls: net.classes[cls], pts: projectLine(decodePolyline(line, net.precision)),
    }));
    const byEdge = new Map();
    roads.forEach((road, i) => {
      byEdge.set(road.edge, i);
      if (road.reverse >= 0) byEdge.set(road.reverse, i);
    });
    const [x0, y0] = project(net.bbox[0], net.bbox[1]);
    const [x1, y1] = project(net.bbox[2], net.bbox[3]);
    state.network = { ...net, roads, byEdge, extent: [x0, y0, x1, y1] };
    state.routes.clear(); // projected with the old origin
    $("map").dataset.roads = String(roads.length);
    $("map-caption").textContent = `${net.name} · ${net.nodes} intersections · ${net.edges} road edges${net.simplified ? " · simplified" : ""}`;
    fitView();
  }

  // -- map: view and drawing -------------------------------------------------------------------

  const view = { cx: 0, cy: 0, s: 0, fitS: 1 };
  let drawQueued = false;

  function mapSize() {
    const box = $("map");
    return [box.clientWidth, box.clientHeight];
  }

  function fitView() {
    if (!state.network) return;
    const [w, h] = mapSize();
    const [x0, y0, x1, y1] = state.network.extent;
    view.cx = (x0 + x1) / 2;
    view.cy = (y0 + y1) / 2;
    view.s = Math.min(w / Math.max(1, (x1 - x0) * 1.08), h / Math.max(1, (y1 - y0) * 1.08));
    view.fitS = view.s;
    scheduleDraw();
  }

  const toScreen = (x, y, w, h) => [(x - view.cx) * view.s + w / 2, h / 2 - (y - view.cy) * view.s];
  const toWorld = (px, py, w, h) => [(px - w / 2) / view.s + view.cx, view.cy - (py - h / 2) / view.s];

  function zoomAt(px, py, factor) {
    const [w, h] = mapSize();
    const [wx, wy] = toWorld(px, py, w, h);
    view.s = Math.min(view.fitS * 300, Math.max(view.fitS / 4, view.s * factor));
    view.cx = wx - (px - w / 2) / view.s;
    view.cy = wy + (py - h / 2) / view.s;
    scheduleDraw();
  }

  function scheduleDraw() {
    if (drawQueued) return;
    drawQueued = true;
    requestAnimationFrame(() => {
      drawQueued = false;
      drawMap();
    });
  }

  function pathOf(ctx, pts, w, h) {
    for (let i = 0; i < pts.length; i += 2) {
      const [sx, sy] = toScreen(pts[i], pts[i + 1], w, h);
      if (i === 0) ctx.moveTo(sx, sy);
      else ctx.lineTo(sx, sy);
    }
  }

  function drawMap() {
    const canvas = $("map-canvas");
    if ($("app-view").hidden) return;
    const ctx = fitCanvas(canvas);
    const [w, h] = mapSize();
    ctx.clearRect(0, 0, w, h);
    ctx.fillStyle = "#eef0ea";
    ctx.fillRect(0, 0, w, h);
    const net = state.network;
    if (!net) return;
    if (view.s === 0) fitView();
    const zoom = Math.min(2.6, Math.max(0.7, Math.sqrt(view.s / view.fitS)));
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    // roads: grey casing, then the fill per class
    ctx.strokeStyle = "#c5cad0";
    for (const road of net.roads) {
      const [width] = ROAD_STYLE[road.cls] || MINOR_ROAD;
      ctx.lineWidth = (width + 1.6) * zoom;
      ctx.beginPath();
      pathOf(ctx, road.pts, w, h);
      ctx.stroke();
    }
    for (const road of net.roads) {
      const [width, color] = ROAD_STYLE[road.cls] || MINOR_ROAD;
      ctx.strokeStyle = color;
      ctx.lineWidth = width * zoom;
      ctx.beginPath();
      pathOf(ctx, road.pts, w, h);
      ctx.stroke();
    }
    drawTraffic(ctx, w, h, zoom);
    drawPicked(ctx, w, h, zoom);
    drawRoutes(ctx, w, h, zoom);
    drawDrivers(ctx, w, h);
    drawArea(ctx, w, h);
    drawScale(ctx, w, h);
    const [lat, lon] = unproject(view.cx, view.cy);
    $("map").dataset.zoom = (view.s / view.fitS).toFixed(3);
    $("map").dataset.center = `${lat.toFixed(6)},${lon.toFixed(6)}`;
  }

  function drawTraffic(ctx, w, h, zoom) {
    const live = state.overview && state.overview.traffic ? state.overview.traffic.live : [];
    const drawn = new Set();
    for (const obs of live) {
      const i = state.network.byEdge.get(obs.edge);
      if (i === undefined || drawn.has(i)) continue;
      drawn.add(i);
      const ratio = obs.speed_kph / Math.max(1, obs.free_flow_kph);
      ctx.strokeStyle = ratio < 0.5 ? "rgba(220,38,38,.85)" : ratio < 0.9 ? "rgba(249,115,22,.85)" : "rgba(22,163,74,.8)";
      ctx.lineWidth = 4.5 * zoom;
      ctx.beginPath();
      pathOf(ctx, state.network.roads[i].pts, w, h);
      ctx.stroke();
    }
  }

  function drawPicked(ctx, w, h, zoom) {
    if (state.pickEdge === null) return;
    const i = state.network.byEdge.get(state.pickEdge);
    if (i === undefined) return;
    ctx.save();
    ctx.setLineDash([6, 4]);
    ctx.strokeStyle = "#1d4ed8";
    ctx.lineWidth = 3 * zoom;
    ctx.beginPath();
    pathOf(ctx, state.network.roads[i].pts, w, h);
    ctx.stroke();
    ctx.restore();
  }

  function drawRoutes(ctx, w, h, zoom) {
    let drawn = 0;
    const ordered = [...state.drivers].sort((a, b) => (a.driver_id === state.selected) - (b.driver_id === state.selected));
    for (const d of ordered) {
      if (!d.route) continue;
      const chosen = state.selected === null || d.driver_id === state.selected;
      const color = colorOf(d.driver_id);
      const geometry = state.routes.get(d.route.route_id);
      ctx.globalAlpha = chosen ? 0.9 : 0.3;
      if (geometry) {
        drawn += 1;
        ctx.strokeStyle = color;
        ctx.lineWidth = (d.driver_id === state.selected ? 4.5 : 3.2) * Math.min(zoom, 1.6);
        for (const leg of geometry.legs) {
          ctx.beginPath();
          pathOf(ctx, leg, w, h);
          ctx.stroke();
        }
      }
      // start (and a fixed end) as squares
      for (const p of [d.route.start, typeof d.route.end === "object" ? d.route.end : null]) {
        if (!p) continue;
        const [x, y] = project(p.lat, p.lon);
        const [sx, sy] = toScreen(x, y, w, h);
        ctx.fillStyle = "#fff";
        ctx.fillRect(sx - 6, sy - 6, 12, 12);
        ctx.fillStyle = color;
        ctx.fillRect(sx - 4, sy - 4, 8, 8);
      }
      for (const s of d.route.stops) {
        if (s.lat === null || s.lon === null) continue;
        const [x, y] = project(s.lat, s.lon);
        const [sx, sy] = toScreen(x, y, w, h);
        const r = chosen ? 9 : 6;
        ctx.beginPath();
        ctx.arc(sx, sy, r, 0, Math.PI * 2);
        ctx.fillStyle = s.passed ? "#cbd5e1" : s.late_s > 0 ? "#dc2626" : color;
        ctx.fill();
        ctx.lineWidth = s.late_s > 0 ? 2.5 : 1.5;
        ctx.strokeStyle = s.late_s > 0 ? "#7f1d1d" : "#ffffff";
        ctx.stroke();
        if (chosen) {
          ctx.fillStyle = s.passed ? "#334155" : "#ffffff";
          ctx.font = "bold 10px system-ui, sans-serif";
          ctx.textAlign = "center";
          ctx.textBaseline = "middle";
          ctx.fillText(String(s.seq), sx, sy + 0.5);
        }
      }
    }
    ctx.globalAlpha = 1;
    $("map").dataset.routes = String(drawn);
  }

  function drawDrivers(ctx, w, h) {
    for (const d of state.drivers) {
      if (!d.position) continue;
      const [x, y] = project(d.position.lat, d.position.lon);
      const [sx, sy] = toScreen(x, y, w, h);
      const stale = d.position.age_s > STALE_PING_S;
      const chosen = d.driver_id === state.selected;
      if (chosen) {
        ctx.beginPath();
        ctx.arc(sx, sy, 15, 0, Math.PI * 2);
        ctx.fillStyle = "rgba(37,99,235,.18)";
        ctx.fill();
      }
      ctx.beginPath();
      ctx.arc(sx, sy, 8, 0, Math.PI * 2);
      ctx.fillStyle = stale ? "#9ca3af" : colorOf(d.driver_id);
      ctx.fill();
      ctx.lineWidth = 3;
      ctx.strokeStyle = "#ffffff";
      ctx.stroke();
      const label = `${d.driver_id} · ${age(d.position.age_s).replace(" ago", "")}`;
      ctx.font = "600 11px system-ui, sans-serif";
      const tw = ctx.measureText(label).width;
      ctx.fillStyle = "rgba(255,255,255,.92)";
      ctx.strokeStyle = stale ? "#9ca3af" : colorOf(d.driver_id);
      ctx.lineWidth = 1;
      roundRect(ctx, sx + 12, sy - 9, tw + 10, 18, 4);
      ctx.fill();
      ctx.stroke();
      ctx.fillStyle = "#111827";
      ctx.textAlign = "left";
      ctx.textBaseline = "middle";
      ctx.fillText(label, sx + 17, sy + 0.5);
    }
  }

  function roundRect(ctx, x, y, w, h, r) {
    ctx.beginPath();
    ctx.moveTo(x + r, y);
    ctx.arcTo(x + w, y, x + w, y + h, r);
    ctx.arcTo(x + w, y + h, x, y + h, r);
    ctx.arcTo(x, y + h, x, y, r);
    ctx.arcTo(x, y, x + w, y, r);
    ctx.closePath();
  }

  function drawArea(ctx, w, h) {
    const rect = drag && drag.area ? drag.area : state.bbox ? bboxWorld(state.bbox) : null;
    if (!rect) return;
    const [ax, ay] = toScreen(rect[0], rect[1], w, h);
    const [bx, by] = toScreen(rect[2], rect[3], w, h);
    ctx.save();
    ctx.fillStyle = "rgba(249,115,22,.10)";
    ctx.strokeStyle = "#ea580c";
    ctx.setLineDash([5, 4]);
    ctx.lineWidth = 1.5;
    ctx.fillRect(Math.min(ax, bx), Math.min(ay, by), Math.abs(bx - ax), Math.abs(by - ay));
    ctx.strokeRect(Math.min(ax, bx), Math.min(ay, by), Math.abs(bx - ax), Math.abs(by - ay));
    ctx.restore();
  }

  function bboxWorld(b) {
    const [x0, y0] = project(b.min_lat, b.min_lon);
    const [x1, y1] = project(b.max_lat, b.max_lon);
    return [x0, y0, x1, y1];
  }

  function drawScale(ctx, w, h) {
    const target = 110 / view.s;
    const lengths = [5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000];
    const metres = lengths.find((m) => m >= target) || lengths[lengths.length - 1];
    const px = metres * view.s;
    const x = 12, y = h - 14;
    ctx.strokeStyle = "#374151";
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.moveTo(x, y - 5);
    ctx.lineTo(x, y);
    ctx.lineTo(x + px, y);
    ctx.lineTo(x + px, y - 5);
    ctx.stroke();
    ctx.fillStyle = "#374151";
    ctx.font = "11px system-ui, sans-serif";
    ctx.textAlign = "left";
    ctx.textBaseline = "bottom";
    ctx.fillText(metres >= 1000 ? `${metres / 1000} km` : `${metres} m`, x + 4, y - 4);
  }

  // -- map: interaction -----------------------------------------------------------------------

  const pointers = new Map();
  let drag = null;
  let pinch = null;

  function local(event) {
    const rect = $("map").getBoundingClientRect();
    return [event.clientX - rect.left, event.clientY - rect.top];
  }

  function setMode(mode) {
    state.mode = mode;
    const badge = $("map-mode");
    badge.hidden = !mode;
    badge.textContent = mode === "pick-road" ? "Click a road to pick it" : mode === "draw-area" ? "Drag to draw an area" : "";
    $("map").classList.toggle("picking", Boolean(mode));
    $("pick-road").classList.toggle("active", mode === "pick-road");
    $("draw-area").classList.toggle("active", mode === "draw-area");
    if (mode) $("map").scrollIntoView({ block: "nearest" }); // the map is where the next click goes
  }

  function onPointerDown(event) {
    const map = $("map");
    map.setPointerCapture(event.pointerId);
    const [px, py] = local(event);
    pointers.set(event.pointerId, [px, py]);
    if (pointers.size === 2) {
      const [a, b] = [...pointers.values()];
      pinch = { dist: Math.hypot(a[0] - b[0], a[1] - b[1]), s: view.s };
      drag = null;
      return;
    }
    drag = { x0: px, y0: py, cx: view.cx, cy: view.cy, moved: false, area: null };
    if (state.mode !== "draw-area") map.classList.add("dragging");
  }

  function onPointerMove(event) {
    if (!pointers.has(event.pointerId)) return;
    const [px, py] = local(event);
    pointers.set(event.pointerId, [px, py]);
    const [w, h] = mapSize();
    if (pinch && pointers.size === 2) {
      const [a, b] = [...pointers.values()];
      const dist = Math.hypot(a[0] - b[0], a[1] - b[1]);
      const mid = [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2];
      zoomAt(mid[0], mid[1], (pinch.s * dist) / Math.max(1, pinch.dist) / view.s);
      return;
    }
    if (!drag) return;
    if (Math.hypot(px - drag.x0, py - drag.y0) > 4) drag.moved = true;
    if (!drag.moved) return;
    if (state.mode === "draw-area") {
      const [ax, ay] = toWorld(drag.x0, drag.y0, w, h);
      const [bx, by] = toWorld(px, py, w, h);
      drag.area = [Math.min(ax, bx), Math.min(ay, by), Math.max(ax, bx), Math.max(ay, by)];
    } else {
      view.cx = drag.cx - (px - drag.x0) / view.s;
      view.cy = drag.cy + (py - drag.y0) / view.s;
    }
    scheduleDraw();
  }

  function onPointerUp(event) {
    if (!pointers.has(event.pointerId)) return;
    const [px, py] = local(event);
    pointers.delete(event.pointerId);
    $("map").classList.remove("dragging");
    if (pinch) {
      if (pointers.size < 2) pinch = null;
      return;
    }
    const finished = drag;
    drag = null;
    if (!finished) return;
    if (finished.moved && finished.area && state.mode === "draw-area") {
      const [x0, y0, x1, y1] = finished.area;
      const [minLat, minLon] = unproject(x0, y0);
      const [maxLat, maxLon] = unproject(x1, y1);
      state.bbox = { min_lat: minLat, min_lon: minLon, max_lat: maxLat, max_lon: maxLon };
      $("t-bbox").textContent = `${minLat.toFixed(4)}, ${minLon.toFixed(4)} – ${maxLat.toFixed(4)}, ${maxLon.toFixed(4)}`;
      $("traffic-form").querySelector("input[value=bbox]").checked = true;
      setMode(null);
      scheduleDraw();
    } else if (!finished.moved) {
      onMapClick(px, py);
    }
  }

  function onMapClick(px, py) {
    const [w, h] = mapSize();
    if (state.mode === "pick-road") {
      const edge = nearestRoad(px, py, w, h);
      if (edge !== null) {
        state.pickEdge = edge;
        $("t-edge").value = String(edge);
        $("traffic-form").querySelector("input[value=edge]").checked = true;
        setMode(null);
        scheduleDraw();
      }
      return;
    }
    let best = null;
    let bestD = 14;
    for (const d of state.drivers) {
      const points = [];
      if (d.position) points.push([d.position.lat, d.position.lon]);
      if (d.route) for (const s of d.route.stops) if (s.lat !== null) points.push([s.lat, s.lon]);
      for (const [lat, lon] of points) {
        const [x, y] = project(lat, lon);
        const [sx, sy] = toScreen(x, y, w, h);
        const dist = Math.hypot(sx - px, sy - py);
        if (dist < bestD) {
          bestD = dist;
          best = d.driver_id;
        }
      }
    }
    if (best !== null) selectDriver(best);
  }

  function nearestRoad(px, py, w, h) {
    let best = null;
    let bestD = 14;
    for (const road of state.network.roads) {
      const p = road.pts;
      let [ax, ay] = toScreen(p[0], p[1], w, h);
      for (let i = 2; i < p.length; i += 2) {
        const [bx, by] = toScreen(p[i], p[i + 1], w, h);
        const dx = bx - ax, dy = by - ay;
        const len = dx * dx + dy * dy;
        const t = len > 0 ? Math.max(0, Math.min(1, ((px - ax) * dx + (py - ay) * dy) / len)) : 0;
        const dist = Math.hypot(ax + t * dx - px, ay + t * dy - py);
        if (dist < bestD) {
          bestD = dist;
          best = road.edge;
        }
        ax = bx;
        ay = by;
      }
    }
    return best;
  }

  function onWheel(event) {
    event.preventDefault();
    const [px, py] = local(event);
    zoomAt(px, py, Math.exp(-event.deltaY * 0.0015));
  }

  // -- start ----------------------------------------------------------------------------------

  function init() {
    $("login-form").addEventListener("submit", onLogin);
    $("sign-out").addEventListener("click", signOut);
    $("flush").addEventListener("click", flushCache);
    $("traffic-form").addEventListener("submit", applyTraffic);
    $("model-form").addEventListener("submit", activateModel);
    $("profile-form").addEventListener("submit", activateProfile);
    $("tp-select").addEventListener("change", () => { $("tp-select").dataset.touched = "1"; });
    $("replan").addEventListener("click", replanSelected);
    $("pick-road").addEventListener("click", () => setMode(state.mode === "pick-road" ? null : "pick-road"));
    $("draw-area").addEventListener("click", () => setMode(state.mode === "draw-area" ? null : "draw-area"));
    $("zoom-in").addEventListener("click", () => { const [w, h] = mapSize(); zoomAt(w / 2, h / 2, 1.5); });
    $("zoom-out").addEventListener("click", () => { const [w, h] = mapSize(); zoomAt(w / 2, h / 2, 1 / 1.5); });
    $("zoom-fit").addEventListener("click", fitView);
    $("t-edge").addEventListener("input", () => {
      const edge = Number.parseInt($("t-edge").value, 10);
      state.pickEdge = Number.isInteger(edge) ? edge : null;
      scheduleDraw();
    });
    const map = $("map");
    map.addEventListener("pointerdown", onPointerDown);
    map.addEventListener("pointermove", onPointerMove);
    map.addEventListener("pointerup", onPointerUp);
    map.addEventListener("pointercancel", onPointerUp);
    map.addEventListener("wheel", onWheel, { passive: false });
    window.addEventListener("resize", () => {
      scheduleDraw();
      if (state.overview) drawChart(state.overview.latency_series);
    });
    $("layer-legend").replaceChildren(...LAYERS.map(([key, color]) =>
      el("span", {}, el("i", { style: `background:${color}` }), key.replace("_", " "))));
    if (sessionStorage.getItem(TOKEN_KEY)) {
      enterApp().catch((err) => {
        if (err instanceof AuthLost) return;
        sessionStorage.removeItem(TOKEN_KEY);
        showLogin("Cannot sign in: " + err.message);
      });
    } else {
      showLogin("");
    }
  }

  init();
})();
