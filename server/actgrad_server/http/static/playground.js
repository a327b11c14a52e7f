// actgrad's playground: one more client of the server's JSON API (/openapi.json).
// Every number shown comes from a /v1/ call; the catalog (names, aliases, parameters,
// defaults, ranges, dtypes, properties) from GET /v1/functions, the gradient-flow
// probe's defaults and inits from /openapi.json. Plain JavaScript, hand-written SVG,
// nothing fetched from anywhere but this server (its Content-Security-Policy says so).
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const NON_FINITE = { NaN: NaN, Infinity: Infinity, "-Infinity": -Infinity };
  const COLOURS = 3;
  const query = new URLSearchParams(location.search);
  const auth = { token: sessionStorage.getItem("actgrad-token") || "" };
  let catalog = [];
  const byName = new Map();
  let flowSpec = {};

  // -- the API -------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, body) {
    const init = { method: body === undefined ? "GET" : "POST", headers: {} };
    if (auth.token) init.headers.Authorization = `Bearer ${auth.token}`;
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (exc) {
      throw new ApiError(0, `the server did not answer (${exc.message})`);
    }
    let document = null;
    try {
      document = await response.json();
    } catch (exc) {
      document = null;
    }
    if (!response.ok) {
      const message = document && typeof document.error === "string"
        ? document.error : response.statusText;
      if (response.status === 401) askForToken(message);
      throw new ApiError(response.status, message);
    }
    return document;
  }

  const num = (v) => (typeof v === "string" ? NON_FINITE[v] : v);
  const nums = (a) => (Array.isArray(a) ? a.map(nums) : num(a));
  const short = (v) => (Number.isFinite(v) ? Number(v.toPrecision(5)).toString() : String(v));

  function askForToken(message) {
    $("token-form").hidden = false;
    $("token-why").textContent = `HTTP 401: ${message}`;
  }

  // Runs `work` for a panel: the newest run wins, its error is shown as the API says it.
  function panelRunner(section, errorBox, work) {
    let latest = 0;
    return async () => {
      const run = ++latest;
      section.dataset.state = "busy";
      try {
        const result = await work.compute();
        if (run !== latest) return;
        work.render(result);
        errorBox.textContent = "";
        section.dataset.state = "ready";
        section.dataset.renders = String(Number(section.dataset.renders) + 1);
      } catch (exc) {
        if (run !== latest) return;
        errorBox.textContent = exc instanceof ApiError
          ? `HTTP ${exc.status}: ${exc.message}` : `error: ${exc.message}`;
        section.dataset.state = "error";
        if (!(exc instanceof ApiError)) console.warn(exc);
      }
    };
  }

  function debounced(fn, ms) {
    let timer = 0;
    return () => {
      clearTimeout(timer);
      timer = setTimeout(fn, ms);
    };
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === false || v === null || v === undefined) continue;
      node.setAttribute(k, v === true ? "" : String(v));
    }
    node.append(...children);
    return node;
  }

  function svgEl(tag, attrs = {}, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function parseList(text, field) {
    const parts = text.split(",").map((s) => s.trim()).filter((s) => s !== "");
    const values = parts.map(Number);
    const bad = parts.findIndex((s, i) => Number.isNaN(values[i]));
    if (bad >= 0 || values.length === 0) {
      throw new Error(`${field}: numbers separated by commas, got ${JSON.stringify(text)}`);
    }
    return values;
  }

  function setQuery(values) {
    for (const [k, v] of Object.entries(values)) {
      if (v === null || v === undefined || v === "") query.delete(k);
      else query.set(k, v);
    }
    history.replaceState(null, "", `?${query.toString()}${location.hash}`);
  }

  // -- plots (SVG) -------------------------------------------------------------------

  function niceTicks(lo, hi, count) {
    const raw = (hi - lo) / count;
    const magnitude = 10 ** Math.floor(Math.log10(raw));
    const r = raw / magnitude;
    const step = (r >= 7.5 ? 10 : r >= 3.5 ? 5 : r >= 1.5 ? 2 : 1) * magnitude;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
      out.push(Math.abs(v) < step * 1e-9 ? 0 : Number(v.toPrecision(12)));
    }
    return out;
  }

  function extent(series, log) {
    let lo = Infinity;
    let hi = -Infinity;
    for (const s of series) {
      for (const v of s.y) {
        if (!Number.isFinite(v) || (log && v <= 0)) continue;
        const w = log ? Math.log10(v) : v;
        lo = Math.min(lo, w);
        hi = Math.max(hi, w);
      }
    }
    if (lo === Infinity) return [0, 1];
    if (lo === hi) return log ? [lo - 1, hi + 1] : [lo - 1, hi + 1];
    const pad = log ? 0.2 : (hi - lo) * 0.05;
    return [lo - pad, hi + pad];
  }

  // A line plot: {series: [{x, y, colour, dashed, label}], title, xLabel, yLabel, log,
  // yDomain}; returns what a cursor needs (the x scale, the svg).
  function linePlot(container, opts) {
    const W = 640;
    const labelled = opts.series.filter((s) => s.label);
    // The legend sits under the x axis, never over a curve.
    const legendRows = [];
    let row = [];
    let used = 0;
    for (const s of labelled) {
      const width = 34 + 6.5 * s.label.length;
      if (row.length && used + width > W - 80) {
        legendRows.push(row);
        row = [];
        used = 0;
      }
      row.push([s, used]);
      used += width;
    }
    if (row.length) legendRows.push(row);
    const m = { l: 66, r: 12, t: 26, b: 40 + 16 * legendRows.length };
    const H = 260 + m.b;
    const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": opts.title });
    const xs = opts.series.flatMap((s) => s.x);
    const x0 = Math.min(...xs);
    const x1 = Math.max(...xs) === x0 ? x0 + 1 : Math.max(...xs);
    const [y0, y1] = opts.yDomain || extent(opts.series, opts.log);
    const sx = (x) => m.l + ((x - x0) / (x1 - x0)) * (W - m.l - m.r);
    const sy = (y) => H - m.b - ((y - y0) / (y1 - y0)) * (H - m.t - m.b);
    const ty = (v) => (opts.log ? Math.log10(v) : v);
    svg.append(svgEl("text", { x: m.l, y: 16, class: "title" }, opts.title));
    let yTicks;
    const fewDecades = opts.log && y1 - y0 < 2;
    if (fewDecades) {
      // Less than two decades: 1, 2 and 5 times powers of ten.
      yTicks = [];
      for (let e = Math.floor(y0); e <= Math.ceil(y1); e += 1) {
        for (const f of [1, 2, 5]) {
          const t = e + Math.log10(f);
          if (t >= y0 && t <= y1) yTicks.push(t);
        }
      }
    } else if (opts.log) {
      const step = Math.max(1, Math.ceil((y1 - y0) / 6));
      yTicks = [];
      for (let e = Math.ceil(y0 / step) * step; e <= y1; e += step) yTicks.push(e);
    } else {
      yTicks = niceTicks(y0, y1, 6);
    }
    for (const t of yTicks) {
      const y = sy(t);
      svg.append(svgEl("line", { x1: m.l, x2: W - m.r, y1: y, y2: y, class: "grid" }));
      svg.append(svgEl("text", { x: m.l - 6, y: y + 4, "text-anchor": "end" },
        !opts.log ? short(t) : fewDecades ? short(10 ** t) : `1e${t}`));
    }
    for (const t of niceTicks(x0, x1, 8)) {
      const x = sx(t);
      svg.append(svgEl("line", { x1: x, x2: x, y1: m.t, y2: H - m.b, class: "grid" }));
      svg.append(svgEl("text", { x, y: H - m.b + 14, "text-anchor": "middle" }, short(t)));
    }
    if (!opts.log && y0 < 0 && y1 > 0) {
      svg.append(svgEl("line", { x1: m.l, x2: W - m.r, y1: sy(0), y2: sy(0), class: "axis" }));
    }
    if (x0 < 0 && x1 > 0) {
      svg.append(svgEl("line", { x1: sx(0), x2: sx(0), y1: m.t, y2: H - m.b, class: "axis" }));
    }
    svg.append(svgEl("text", { x: (m.l + W - m.r) / 2, y: H - m.b + 30, "text-anchor": "middle" },
      opts.xLabel));
    svg.append(svgEl("text", {
      x: 14, y: (m.t + H - m.b) / 2, "text-anchor": "middle",
      transform: `rotate(-90 14 ${(m.t + H - m.b) / 2})`,
    }, opts.yLabel));
    const clip = `clip-${container.id}`;
    const defs = svgEl("defs");
    const clipPath = svgEl("clipPath", { id: clip });
    clipPath.append(svgEl("rect", { x: m.l, y: m.t, width: W - m.l - m.r, height: H - m.t - m.b }));
    defs.append(clipPath);
    svg.append(defs);
    opts.series.forEach((s, i) => {
      let d = "";
      let pen = "M";
      s.y.forEach((v, k) => {
        const w = ty(v);
        if (!Number.isFinite(w)) {
          pen = "M";
          return;
        }
        d += `${pen}${sx(s.x[k]).toFixed(2)},${sy(w).toFixed(2)}`;
        pen = "L";
      });
      svg.append(svgEl("path", {
        d, class: `series s${s.colour ?? i}${s.dashed ? " dashed" : ""}`, "clip-path": `url(#${clip})`,
      }));
    });
    legendRows.forEach((items, r) => {
      const ly = H - m.b + 50 + 16 * r;
      for (const [s, at] of items) {
        const x = m.l + at;
        svg.append(svgEl("line", { x1: x, x2: x + 24, y1: ly - 4, y2: ly - 4,
          class: `series s${s.colour}${s.dashed ? " dashed" : ""}` }));
        svg.append(svgEl("text", { x: x + 30, y: ly }, s.label));
      }
    });
    const cursor = svgEl("line", { y1: m.t, y2: H - m.b, class: "cursor", visibility: "hidden" });
    svg.append(cursor);
    container.replaceChildren(svg);
    return { svg, sx, W, m, x0, x1, cursor };
  }

  // Bars with their values written on them: {values, labels, title, yLabel}.
  function barPlot(container, opts) {
    const W = 640;
    const H = 260;
    const m = { l: 66, r: 12, t: 26, b: 36 };
    const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": opts.title });
    const lo = Math.min(0, ...opts.values.filter(Number.isFinite));
    const hi = Math.max(0, ...opts.values.filter(Number.isFinite));
    const y0 = lo === hi ? -1 : lo - (hi - lo) * 0.08;
    const y1 = lo === hi ? 1 : hi + (hi - lo) * 0.12;
    const sy = (y) => H - m.b - ((y - y0) / (y1 - y0)) * (H - m.t - m.b);
    svg.append(svgEl("text", { x: m.l, y: 16, class: "title" }, opts.title));
    for (const t of niceTicks(y0, y1, 5)) {
      svg.append(svgEl("line", { x1: m.l, x2: W - m.r, y1: sy(t), y2: sy(t), class: "grid" }));
      svg.append(svgEl("text", { x: m.l - 6, y: sy(t) + 4, "text-anchor": "end" }, short(t)));
    }
    svg.append(svgEl("line", { x1: m.l, x2: W - m.r, y1: sy(0), y2: sy(0), class: "axis" }));
    svg.append(svgEl("text", {
      x: 14, y: (m.t + H - m.b) / 2, "text-anchor": "middle",
      transform: `rotate(-90 14 ${(m.t + H - m.b) / 2})`,
    }, opts.yLabel));
    const slot = (W - m.l - m.r) / opts.values.length;
    opts.values.forEach((v, i) => {
      const x = m.l + slot * i + slot * 0.15;
      const top = Number.isFinite(v) ? sy(Math.max(v, 0)) : sy(0);
      const height = Number.isFinite(v) ? Math.abs(sy(v) - sy(0)) : 0;
      svg.append(svgEl("rect", { x, y: top, width: slot * 0.7, height, class: `b${i % COLOURS}` }));
      const labelY = v >= 0 ? top - 4 : top + height + 12;
      svg.append(svgEl("text", {
        x: x + slot * 0.35, y: labelY, "text-anchor": "middle", class: "bar-label",
      }, Number.isFinite(v) ? v.toFixed(3) : String(v)));
      svg.append(svgEl("text", { x: x + slot * 0.35, y: H - m.b + 16, "text-anchor": "middle" },
        opts.labels[i]));
    });
    container.replaceChildren(svg);
  }

  function table(caption, head, rows, id) {
    const t = el("table", id ? { id } : {});
    if (caption) t.append(el("caption", {}, caption));
    const thead = el("thead");
    thead.append(el("tr", {}, ...head.map((h) => el("th", { scope: "col" }, h))));
    const tbody = el("tbody");
    for (const row of rows) {
      tbody.append(el("tr", {}, ...row.map((c) => el("td", {},
        typeof c === "number" ? String(c) : c))));
    }
    t.append(thead, tbody);
    return t;
  }

  // -- parameter controls, from the catalog --------------------------------------------

  function paramControls(fn, prefix, given, onChange) {
    const box = el("span", { class: "params" });
    const read = [];
    for (const p of fn.params) {
      const id = `${prefix}-${p.name}`;
      const start = given[p.name] ?? p.default;
      let input;
      let value;
      if (p.kind === "bool") {
        input = el("input", { id, type: "checkbox", checked: start === true || start === "true" });
        value = () => input.checked;
      } else if (p.kind === "string" && p.choices.length) {
        input = el("select", { id }, ...p.choices.map((c) => el("option", { value: c }, c)));
        input.value = start ?? p.choices[0];
        value = () => input.value;
      } else if (p.kind === "string") {
        input = el("input", { id, type: "text", value: start ?? "" });
        value = () => input.value;
      } else {
        const attrs = { id, type: "number", step: p.kind === "integer" ? "1" : "any" };
        if (p.minimum !== null && !p.minimum_exclusive) attrs.min = num(p.minimum);
        if (p.maximum !== null && !p.maximum_exclusive) attrs.max = num(p.maximum);
        // prelu's slope has no default; a number is a 0-d slope.
        attrs.value = start ?? (p.kind === "tensor" ? 0.25 : "");
        input = el("input", attrs);
        value = () => (input.value === "" ? null : Number(input.value));
      }
      input.addEventListener("input", onChange);
      input.addEventListener("change", onChange);
      const label = el("label", { for: id, title: p.description }, `${p.name} `);
      box.append(el("span", { class: "field" }, label, input));
      read.push([p.name, value]);
    }
    return {
      box,
      values() {
        const out = {};
        for (const [name, value] of read) {
          const v = value();
          if (v !== null) out[name] = v;
        }
        return out;
      },
    };
  }

  const encodeParams = (p) => Object.entries(p).map(([k, v]) => `${k}:${v}`).join(";");
  function decodeParams(text) {
    const out = {};
    for (const pair of (text || "").split(";")) {
      const at = pair.indexOf(":");
      if (at > 0) out[pair.slice(0, at)] = pair.slice(at + 1);
    }
    return out;
  }

  function fnOptions(select, list, blank) {
    if (blank) select.append(el("option", { value: "" }, "(none)"));
    for (const f of list) {
      const aliases = f.aliases.length ? ` (${f.aliases.join(", ")})` : "";
      select.append(el("option", { value: f.name }, f.name + aliases));
    }
  }

  const canonical = (name) => (byName.get(name) || {}).name || "";

  // -- functions panel ----------------------------------------------------------------

  function functionsPanel() {
    const section = $("functions");
    const elementwise = catalog.filter((f) => f.elementwise);
    const pickers = [];
    const dtype = $("fn-dtype");
    const wanted = (query.get("fn") || "gelu,swish,sigmoid").split(",");
    let result = null;
    let cursor = -1;
    let views = [];

    const rerun = () => run();
    const rerunSoon = debounced(rerun, 200);
    for (let i = 0; i < 3; i += 1) {
      const select = el("select", { id: `fn-${i}`, "aria-label": `function ${i + 1}` });
      fnOptions(select, elementwise, i > 0);
      select.value = canonical(wanted[i] || "");
      if (i === 0 && !select.value) select.value = elementwise[0].name;
      const row = el("div", { class: `picker c${i}` }, el("label", { for: `fn-${i}` },
        `${i + 1}.`), select);
      const picker = { select, row, controls: null };
      const given = decodeParams(query.get(`p${i}`));
      picker.build = (keep) => {
        if (picker.controls) picker.controls.box.remove();
        const fn = byName.get(select.value);
        picker.controls = fn ? paramControls(fn, `fn-${i}`, keep || {}, rerunSoon) : null;
        if (picker.controls) row.append(picker.controls.box);
      };
      picker.build(given);
      select.addEventListener("change", () => {
        picker.build({});
        rerun();
      });
      pickers.push(picker);
      $("fn-pickers").append(row);
    }
    const dtypes = catalog.find((f) => f.elementwise).dtypes;
    for (const d of dtypes) dtype.append(el("option", { value: d }, d));
    dtype.value = query.get("dtype") || "float32";
    if (query.get("xmin")) $("fn-xmin").value = query.get("xmin");
    if (query.get("xmax")) $("fn-xmax").value = query.get("xmax");
    if (query.get("n")) $("fn-points").value = query.get("n");
    for (const id of ["fn-xmin", "fn-xmax", "fn-points"]) {
      $(id).addEventListener("input", rerunSoon);
      $(id).addEventListener("change", rerun);
    }
    dtype.addEventListener("change", rerun);

    function inputs() {
      const lo = Number($("fn-xmin").value);
      const hi = Number($("fn-xmax").value);
      const n = Math.round(Number($("fn-points").value));
      if (!(hi > lo) || !(n >= 2 && n <= 2001)) {
        throw new Error("the range needs x from < to and 2..2001 points");
      }
      const x = Array.from({ length: n }, (_, k) => Number((lo + ((hi - lo) * k) / (n - 1))
        .toPrecision(12)));
      const chosen = pickers.filter((p) => p.select.value)
        .map((p, i) => ({ index: pickers.indexOf(p), name: p.select.value,
          params: p.controls ? p.controls.values() : {} }));
      return { x, chosen, dtype: dtype.value, lo, hi, n };
    }

    const work = {
      async compute() {
        const q = inputs();
        const state = { fn: q.chosen.map((c) => c.name).join(","), dtype: q.dtype,
          xmin: q.lo, xmax: q.hi, n: q.n };
        for (let i = 0; i < 3; i += 1) {
          const c = q.chosen.find((cc) => cc.index === i);
          state[`p${i}`] = c ? encodeParams(c.params) : "";
        }
        setQuery(state);
        const answers = await Promise.all(q.chosen.map((c) => api("/v1/gradient", {
          x: q.x, function: c.name, params: c.params, dtype: q.dtype, return_output: true,
        })));
        return { ...q, answers: answers.map((a) => ({
          f: nums(a.output), g: nums(a.grad_input), dtype: a.dtype })) };
      },
      render(r) {
        result = r;
        const series = (key) => r.chosen.map((c, k) => ({
          x: r.x, y: r.answers[k][key], colour: c.index,
          label: `${c.index + 1}. ${c.name}`,
        }));
        const names = r.chosen.map((c) => c.name).join(", ");
        views = [
          linePlot($("fn-plot-f"), { series: series("f"), title: `f(x): ${names} (${r.dtype})`,
            xLabel: "x", yLabel: "f(x)" }),
          linePlot($("fn-plot-g"), { series: series("g"), title: `f'(x): ${names} (${r.dtype})`,
            xLabel: "x", yLabel: "f'(x)" }),
        ];
        const head = ["x"];
        for (const c of r.chosen) head.push(`${c.index + 1}. ${c.name} f(x)`, `${c.index + 1}. ${c.name} f'(x)`);
        const rows = r.x.map((x, k) => [x, ...r.answers.flatMap((a) => [a.f[k], a.g[k]])]);
        $("fn-table").replaceChildren(table(`f and f' in ${r.dtype}, as the server computed them`,
          head, rows, "fn-values"));
        about(r.chosen);
        if (cursor >= r.x.length) cursor = r.x.length - 1;
        if (cursor >= 0) point(cursor);
        if (!document.documentElement.dataset.firstPlotMs) {
          document.documentElement.dataset.firstPlotMs = String(Math.round(performance.now()));
        }
      },
    };
    const run = panelRunner(section, $("fn-error"), work);

    function about(chosen) {
      const articles = chosen.map((c) => {
        const f = byName.get(c.name);
        const p = f.properties;
        const dl = el("dl");
        const add = (k, v) => dl.append(el("dt", {}, k), el("dd", {}, String(v)));
        add("range", `[${p.output_min}, ${p.output_max}]`);
        for (const k of ["monotonic", "smooth", "zero_centred", "saturating_left",
          "saturating_right"]) add(k.replace("_", " "), p[k] ? "yes" : "no");
        if (p.condition) add("holds", p.condition);
        for (const param of f.params) add(`param ${param.name}`, describe(param));
        return el("article", { class: `c${c.index}` },
          el("h3", {}, `${c.index + 1}. ${f.name}${f.aliases.length ? ` (${f.aliases.join(", ")})` : ""}`),
          el("p", {}, f.summary), el("p", { class: "formula" }, f.formula),
          el("p", { class: "formula" }, f.gradient_note), dl);
      });
      $("fn-about").replaceChildren(...articles);
    }

    // A parameter as the catalog states it: kind, default, range or choices, meaning.
    function describe(p) {
      const parts = [p.kind];
      if (p.required) parts.push("required");
      else if (p.default !== null) parts.push(`default ${p.default}`);
      if (p.minimum !== null) parts.push(`${p.minimum_exclusive ? ">" : ">="} ${p.minimum}`);
      if (p.maximum !== null) parts.push(`${p.maximum_exclusive ? "<" : "<="} ${p.maximum}`);
      if (p.choices.length) parts.push(`one of ${p.choices.join(", ")}`);
      return `${parts.join(", ")}: ${p.description}`;
    }

    function point(k) {
      if (!result) return;
      cursor = Math.max(0, Math.min(result.x.length - 1, k));
      const x = result.x[cursor];
      for (const v of views) {
        v.cursor.setAttribute("x1", v.sx(x));
        v.cursor.setAttribute("x2", v.sx(x));
        v.cursor.setAttribute("visibility", "visible");
      }
      const parts = result.chosen.map((c, i) => `${c.index + 1}. ${c.name}: f = ${
        short(result.answers[i].f[cursor])}, f' = ${short(result.answers[i].g[cursor])}`);
      $("fn-readout").textContent = `x = ${short(x)}   ${parts.join("   ")}`;
    }

    for (const id of ["fn-plot-f", "fn-plot-g"]) {
      const box = $(id);
      box.addEventListener("pointermove", (event) => {
        if (!result || !views.length) return;
        const svg = box.querySelector("svg");
        const rect = svg.getBoundingClientRect();
        const v = views[0];
        const px = ((event.clientX - rect.left) / rect.width) * v.W;
        const x = v.x0 + ((px - v.m.l) / (v.W - v.m.l - v.m.r)) * (v.x1 - v.x0);
        let best = 0;
        result.x.forEach((xx, i) => {
          if (Math.abs(xx - x) < Math.abs(result.x[best] - x)) best = i;
        });
        point(best);
      });
      box.addEventListener("keydown", (event) => {
        if (!result) return;
        const step = event.shiftKey ? 10 : 1;
        const moves = { ArrowLeft: -step, ArrowRight: step, Home: -Infinity, End: Infinity };
        if (!(event.key in moves)) return;
        event.preventDefault();
        const from = cursor < 0 ? Math.floor(result.x.length / 2) : cursor;
        const to = moves[event.key] === -Infinity ? 0
          : moves[event.key] === Infinity ? result.x.length - 1 : from + moves[event.key];
        point(to);
      });
    }
    return run;
  }

  // -- softmax panel -------------------------------------------------------------------

  function softmaxPanel() {
    const section = $("softmax");
    const softmax = byName.get("softmax");
    const temperature = softmax.params.find((p) => p.name === "temperature");
    const logParam = softmax.params.find((p) => p.name === "log");
    $("sm-temperature").value = query.get("T") || temperature.default;
    $("sm-temperature").title = temperature.description;
    $("sm-log").checked = query.get("log") === "1" || (!query.has("log") && logParam.default);
    if (query.get("logits")) $("sm-x").value = query.get("logits");
    if (query.get("g")) $("sm-g").value = query.get("g");
    for (const d of softmax.dtypes) $("sm-dtype").append(el("option", { value: d }, d));
    $("sm-dtype").value = query.get("smdtype") || "float64";

    const work = {
      async compute() {
        const x = parseList($("sm-x").value, "logits");
        const g = parseList($("sm-g").value, "upstream gradient");
        const T = Number($("sm-temperature").value);
        const log = $("sm-log").checked;
        const dtype = $("sm-dtype").value;
        setQuery({ logits: $("sm-x").value, g: $("sm-g").value, T, log: log ? "1" : "0",
          smdtype: dtype });
        const [forward, backward] = await Promise.all([
          api("/v1/softmax", { x, temperature: T, log, dtype }),
          api("/v1/gradient", { x, function: "softmax", params: { temperature: T, log },
            grad_output: g, dtype }),
        ]);
        return { x, g, log, dtype, y: nums(forward.output), grad: nums(backward.grad_input) };
      },
      render(r) {
        const name = r.log ? "log-softmax" : "softmax";
        $("sm-caption-p").textContent = `${name}(x)`;
        const labels = r.x.map((_, i) => `x${i + 1}`);
        barPlot($("sm-plot-p"), { values: r.y, labels, title: `${name}(x / T) (${r.dtype})`,
          yLabel: r.log ? "log probability" : "probability" });
        barPlot($("sm-plot-g"), { values: r.grad, labels,
          title: `gᵀJ for g = [${r.g.join(", ")}]`, yLabel: "∂L/∂x" });
        const rows = r.x.map((x, i) => [labels[i], x, r.y[i], r.g[i] ?? "", r.grad[i]]);
        $("sm-table").replaceChildren(table(`${name} and its vector-Jacobian product (${r.dtype})`,
          ["i", "logit", name, "g", "gᵀJ"], rows, "sm-values"));
      },
    };
    const run = panelRunner(section, $("sm-error"), work);
    const soon = debounced(run, 250);
    for (const id of ["sm-x", "sm-g", "sm-temperature"]) {
      $(id).addEventListener("input", soon);
      $(id).addEventListener("change", run);
    }
    $("sm-log").addEventListener("change", run);
    $("sm-dtype").addEventListener("change", run);
    return run;
  }

  // -- the neuron -------------------------------------------------------------------

  function neuronPanel() {
    const section = $("neuron");
    const select = el("select", { id: "nn-activation" });
    fnOptions(select, catalog, true);
    select.options[0].textContent = "(none: y = z)";
    select.value = query.has("act") ? canonical(query.get("act")) : "sigmoid";
    const label = el("label", { for: "nn-activation" }, "f ");
    $("nn-act").append(label, select);
    let controls = null;
    const rerun = () => run();
    const soon = debounced(rerun, 250);
    const build = (given) => {
      if (controls) controls.box.remove();
      const fn = byName.get(select.value);
      controls = fn ? paramControls(fn, "nn-p", given, soon) : null;
      if (controls) $("nn-act").append(controls.box);
    };
    build(decodeParams(query.get("actp")));
    select.addEventListener("change", () => {
      build({});
      rerun();
    });
    for (const [id, key] of [["nn-x", "nx"], ["nn-w", "nw"], ["nn-b", "nb"], ["nn-g", "ng"]]) {
      if (query.get(key)) $(id).value = query.get(key);
      $(id).addEventListener("input", soon);
      $(id).addEventListener("change", rerun);
    }

    const work = {
      async compute() {
        const x = parseList($("nn-x").value, "x");
        const weight = $("nn-w").value.split(";").map((row, j) => parseList(row, `W row ${j + 1}`));
        const bias = parseList($("nn-b").value, "b");
        const g = parseList($("nn-g").value, "g");
        const activation = select.value;
        const params = controls ? controls.values() : {};
        setQuery({ nx: $("nn-x").value, nw: $("nn-w").value, nb: $("nn-b").value,
          ng: $("nn-g").value, act: activation || "none", actp: encodeParams(params) });
        const common = { x, weight, bias, activation, params };
        const vjp = await api("/v1/dense_vjp", { ...common, grad_output: g,
          return_output: true, return_net_output: true });
        const z = nums(vjp.net_output);
        const fn = byName.get(activation);
        let slope = null;
        let delta = g;
        if (fn) {
          // The chain rule's middle factor, from the server: f'(z) (elementwise) and
          // delta = dL/dz = g * f'(z) (for softmax, g's vector-Jacobian product).
          const calls = [api("/v1/gradient", { x: z, function: activation, params, grad_output: g })];
          if (fn.elementwise) calls.push(api("/v1/gradient", { x: z, function: activation, params }));
          const [d, s] = await Promise.all(calls);
          delta = nums(d.grad_input);
          slope = s ? nums(s.grad_input) : null;
        }
        return { x, weight, bias, g, activation, z, slope, delta,
          y: nums(vjp.output), gx: nums(vjp.grad_input), gw: nums(vjp.grad_weight),
          gb: nums(vjp.grad_bias), gp: vjp.grad_params, elementwise: !fn || fn.elementwise };
      },
      render(r) {
        const f = r.activation || "identity";
        const outs = r.z.map((_, j) => `j=${j + 1}`);
        const forward = r.z.map((z, j) => [outs[j], z, r.y[j]]);
        const backward = r.z.map((_, j) => [outs[j], r.g[j], r.slope ? r.slope[j]
          : (r.activation ? "(Jacobian)" : 1), r.delta[j], r.gb[j]]);
        const gw = r.gw.map((row, j) => [outs[j], ...row]);
        const ins = r.x.map((_, i) => `i=${i + 1}`);
        const gx = r.x.map((x, i) => [ins[i], x, r.gx[i]]);
        const tables = [
          el("p", {}, `z = x·Wᵀ + b, y = ${f}(z); backward: δ = ∂L/∂z = g ${
            r.elementwise ? `⊙ ${f}'(z)` : "· J(z)"}, ∂L/∂b = δ, ∂L/∂W[j,i] = δ_j x_i, ∂L/∂x_i = Σ_j W[j,i] δ_j`),
          table("forward", ["", "z", `y = ${f}(z)`], forward, "nn-forward"),
          table("the chain rule at z", ["", "g = ∂L/∂y", `${f}'(z)`, "δ = ∂L/∂z", "∂L/∂b"],
            backward, "nn-backward"),
          table("∂L/∂W = δ xᵀ", ["", ...ins], gw, "nn-grad-weight"),
          table("∂L/∂x = Wᵀ δ", ["", "x", "∂L/∂x"], gx, "nn-grad-input"),
        ];
        for (const [name, value] of Object.entries(r.gp || {})) {
          const v = nums(value);
          tables.push(table(`∂L/∂${name}`, [name], [[Array.isArray(v) ? v.join(", ") : v]],
            `nn-grad-${name}`));
        }
        $("nn-tables").replaceChildren(tables[0], ...tables.slice(1).map((t) => el("div", {
          class: "table-wrap" }, t)));
      },
    };
    const run = panelRunner(section, $("nn-error"), work);
    return run;
  }

  // -- gradients through depth ------------------------------------------------------------

  function flowPanel() {
    const section = $("flow");
    const box = $("flow-configs");
    const probe = catalog.filter((f) => f.elementwise && !f.params.some((p) => p.kind === "tensor"));
    const d = (name) => flowSpec[name].default;
    const configs = [];
    const rerun = () => run();
    const soon = debounced(rerun, 300);

    function addConfig(c) {
      const i = configs.length;
      const id = (name) => `flow-${i}-${name}`;
      const fn = el("select", { id: id("function") });
      fnOptions(fn, probe, false);
      fn.value = canonical(c.function) || "sigmoid";
      // The function's parameters, as the catalog states them (GET /v1/functions).
      const paramBox = el("span", { class: "flow-params" });
      let params = null;
      const buildParams = (given) => {
        params = paramControls(byName.get(fn.value), id("p"), given, soon);
        paramBox.replaceChildren(params.box);
      };
      buildParams(c.params || {});
      const choices = (name) => el("select", { id: id(name) },
        ...flowSpec[name].enum.map((v) => el("option", { value: v }, v)));
      const init = choices("init");
      init.value = c.init || d("init");
      // Integers with the minimum and default /openapi.json states for each.
      const number = (name) => el("input", { id: id(name), type: "number", step: "1",
        min: flowSpec[name].minimum, value: c[name] ?? d(name) });
      const depth = number("depth");
      const width = number("width");
      const batch = number("batch");
      const seed = number("seed");
      const dtype = choices("dtype");
      dtype.value = c.dtype || d("dtype");
      const initStd = el("input", { id: id("init_std"), type: "number", step: "any", min: 0,
        value: c.init_std ?? "", title: flowSpec.init_std.description });
      const residual = el("input", { id: id("residual"), type: "checkbox", checked: !!c.residual });
      const normalize = el("input", { id: id("normalize"), type: "checkbox", checked: !!c.normalize });
      const fields = [["function", fn], [null, paramBox], ["init", init], ["init_std", initStd],
        ["depth", depth], ["width", width], ["batch", batch], ["seed", seed], ["dtype", dtype]];
      const set = el("fieldset", { class: `flow-config c${i}` }, el("legend", {}, `configuration ${i + 1}`));
      for (const [name, input] of fields) {
        // A label and its field wrap to the next line together.
        set.append(name ? el("span", { class: "field" }, el("label", { for: input.id,
          title: flowSpec[name].description }, `${name} `), input) : input);
      }
      set.append(el("label", {}, residual, " residual"), el("label", {}, normalize, " normalize"));
      fn.addEventListener("change", () => {
        buildParams({});
        rerun();
      });
      for (const input of [init, dtype, residual, normalize]) input.addEventListener("change", rerun);
      const showStd = () => {
        initStd.disabled = init.value !== "normal";
      };
      showStd();
      init.addEventListener("change", showStd);
      for (const input of [depth, width, batch, seed, initStd]) {
        input.addEventListener("input", soon);
        input.addEventListener("change", rerun);
      }
      box.append(set);
      configs.push({
        set,
        read: () => ({ function: fn.value, params: params.values(), init: init.value,
          depth: Number(depth.value), width: Number(width.value), batch: Number(batch.value),
          seed: Number(seed.value), residual: residual.checked, normalize: normalize.checked,
          dtype: dtype.value,
          ...(init.value === "normal" && initStd.value !== ""
            ? { init_std: Number(initStd.value) } : {}) }),
      });
    }

    const controls = el("div", { class: "presets" });
    const add = el("button", { type: "button", id: "flow-add" }, "add a configuration");
    const remove = el("button", { type: "button", id: "flow-remove" }, "remove the last");
    controls.append(add, remove);

    function setConfigs(list) {
      configs.length = 0;
      box.replaceChildren();
      for (const c of list.slice(0, 3)) addConfig(c);
      box.append(controls);
      add.disabled = configs.length >= 3;
      remove.disabled = configs.length <= 1;
    }

    // One configuration in the address: its fields joined by ":", the parameters last
    // as name=value pairs joined by ";", each part escaped (configurations are joined by ",").
    const encode = (c) => [c.function, c.init, c.depth, c.width, c.seed, c.residual ? 1 : 0,
      c.normalize ? 1 : 0, c.init_std ?? "", c.batch, c.dtype, Object.entries(c.params)
        .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join(";")]
      .join(":");
    const decode = (s) => {
      const [fn, init, depth, width, seed, residual, normalize, std, batch, dtype, params] =
        s.split(":");
      const given = {};
      const unescape = (t) => {
        try {
          return decodeURIComponent(t);
        } catch (exc) {
          return t; // a hand-edited address: the API will say what is wrong with it
        }
      };
      for (const pair of (params || "").split(";")) {
        const at = pair.indexOf("=");
        if (at > 0) given[unescape(pair.slice(0, at))] = unescape(pair.slice(at + 1));
      }
      return { function: fn, init, depth: Number(depth) || undefined,
        width: Number(width) || undefined, seed: Number(seed) || 0,
        residual: residual === "1", normalize: normalize === "1",
        init_std: std ? Number(std) : undefined, batch: Number(batch) || undefined,
        dtype: dtype || undefined, params: given };
    };
    const presets = {
      vanish: [{ function: "sigmoid", init: "xavier_normal" }, { function: "relu", init: "he_normal" }],
      rescue: [{ function: "sigmoid", init: "xavier_normal" },
        { function: "sigmoid", init: "xavier_normal", residual: true },
        { function: "sigmoid", init: "xavier_normal", normalize: true }],
    };
    setConfigs(query.get("flow") ? query.get("flow").split(",").map(decode) : presets.vanish);
    for (const button of document.querySelectorAll("[data-preset]")) {
      button.addEventListener("click", () => {
        setConfigs(presets[button.dataset.preset]);
        rerun();
      });
    }
    add.addEventListener("click", () => {
      const list = configs.map((c) => c.read());
      setConfigs([...list, { ...list[list.length - 1] }]);
      rerun();
    });
    remove.addEventListener("click", () => {
      setConfigs(configs.map((c) => c.read()).slice(0, -1));
      rerun();
    });

    // A configuration's name: its function, parameters and init, and what else differs
    // from the defaults.
    const label = (c, i) => {
      const declared = new Map(byName.get(c.function).params.map((p) => [p.name, p.default]));
      const shown = Object.entries(c.params).filter(([k, v]) => String(v) !== String(declared.get(k)))
        .map(([k, v]) => `${k}=${v}`).join(", ");
      return `${i + 1}. ${c.function}${shown ? ` (${shown})` : ""}, ${c.init}${
        c.init_std !== undefined ? ` ${c.init_std}` : ""}${c.residual ? ", residual" : ""}${
        c.normalize ? ", normalize" : ""}${c.batch !== d("batch") ? `, batch ${c.batch}` : ""}${
        c.dtype !== d("dtype") ? `, ${c.dtype}` : ""}`;
    };
    const work = {
      async compute() {
        const list = configs.map((c) => c.read());
        setQuery({ flow: list.map(encode).join(",") });
        const answers = await Promise.all(list.map((c) => api("/v1/gradient_flow", c)));
        return { list, answers: answers.map((a) => Object.fromEntries(
          Object.entries(a).map(([k, v]) => [k, nums(v)]))) };
      },
      render(r) {
        const layers = (a) => a.grad_rms.map((_, l) => l);
        const series = (key, from) => r.answers.map((a, i) => ({
          x: layers(a).slice(from), y: a[key], colour: i, label: label(r.list[i], i) }));
        linePlot($("flow-plot-grad"), { series: series("grad_rms", 0), log: true,
          title: "gradient RMS, ∂L/∂h_l", xLabel: "layer l", yLabel: "RMS (log)" });
        linePlot($("flow-plot-act"), { series: series("act_rms", 0), log: true,
          title: "activation RMS, h_l", xLabel: "layer l", yLabel: "RMS (log)" });
        linePlot($("flow-plot-sat"), {
          series: [...series("saturated", 1), ...series("dead", 1).map((s) => ({ ...s, dashed: true,
            label: "" }))],
          yDomain: [0, 1], title: "saturated |f'(z)| < 1e-3 (solid), dead units (dashed)",
          xLabel: "layer l", yLabel: "fraction" });
        $("flow-summary").replaceChildren(...r.answers.map((a, i) => el("span", {
          class: "flow-ratio" }, `${label(r.list[i], i)}: grad_rms[0] / grad_rms[${
          a.grad_rms.length - 1}] = ${short(a.ratio)}. `)));
        const head = ["layer"];
        r.list.forEach((c, i) => head.push(`${i + 1} grad_rms`, `${i + 1} act_rms`,
          `${i + 1} saturated`, `${i + 1} dead`));
        const depth = Math.max(...r.answers.map((a) => a.grad_rms.length));
        const rows = Array.from({ length: depth }, (_, l) => [l, ...r.answers.flatMap((a) => [
          a.grad_rms[l] ?? "", a.act_rms[l] ?? "", l ? a.saturated[l - 1] ?? "" : "",
          l ? a.dead[l - 1] ?? "" : ""])]);
        $("flow-table").replaceChildren(table(`per layer (${r.list.map(label).join("; ")})`, head,
          rows, "flow-values"));
      },
    };
    const run = panelRunner(section, $("flow-error"), work);
    return run;
  }

  // -- start ----------------------------------------------------------------------------

  let runs = [];
  async function start() {
    try {
      const [functions, openapi] = await Promise.all([api("/v1/functions"), api("/openapi.json")]);
      catalog = functions.functions;
      for (const f of catalog) {
        byName.set(f.name, f);
        for (const a of f.aliases) byName.set(a, f);
      }
      flowSpec = openapi.paths["/v1/gradient_flow"].post.requestBody.content["application/json"]
        .schema.properties;
      $("page-error").textContent = "";
    } catch (exc) {
      $("page-error").textContent = exc instanceof ApiError
        ? `HTTP ${exc.status}: ${exc.message}` : `error: ${exc.message}`;
      return;
    }
    runs = [functionsPanel(), softmaxPanel(), neuronPanel(), flowPanel()];
    await Promise.all(runs.map((run) => run()));
    document.documentElement.dataset.ready = "1";
  }

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    auth.token = $("token").value.trim();
    sessionStorage.setItem("actgrad-token", auth.token);
    $("token-form").hidden = true;
    if (runs.length) runs.forEach((run) => run());
    else start();
  });
  start();
})();
