// sweeper dashboards: the views (curve cards, d90 vs r90, answers vs model size, the summary and
// running tables, legend, filter, live polling), drawn from the view data that
// sweeper.dashboard.views builds from MLflow with the small SVG library in plot.js
// (window.sweeperPlot). No library and no network: the report file works offline, and the live
// page (`sweeper dashboard`) re-fetches the same data from its JSON endpoint.
(function (plot) {
  "use strict";

  const { isNum, svg, h, fmt, fmtSeconds, interval, frame, marker, errorbar, placeLabels } = plot;
  const OUTCOME_WORDS = {
    pass: "pass",
    fail: "fail",
    diverged: "diverged (no finite metric)",
    stopped: "stopped early",
    error: "error",
    other: "other",
  };
  const OUTCOME_SHAPE = {
    pass: "circle", fail: "circle", stopped: "circle", diverged: "cross", error: "square",
    other: "diamond",
  };
  const METHOD_SHAPE = { did: "circle", said: "square", lora: "triangle" };
  const LABELLED = 8; // d90 vs r90 names its points up to this many; beyond, hover tells

  // --- view helpers ------------------------------------------------------------------------

  function notes(list) {
    if (!list || !list.length) return null;
    return h("ul", { class: "notes" }, list.map((n) => h("li", { text: n })));
  }

  function methodClass(method) {
    return "method-" + (METHOD_SHAPE[method] ? method : "other");
  }

  function outcomeKey(outcome) {
    return OUTCOME_WORDS[outcome] && outcome !== "other" ? outcome : "other";
  }

  // --- view 1: metric vs d (or r), every probe a point --------------------------------------

  function curveCard(c) {
    const card = h("div", {
      class: "card",
      "data-search": [c.experiment, c.model, c.task, c.method].join(" "),
      "data-run-id": c.run_id,
    });
    card.appendChild(h("h3", { text: `${c.title}  (${c.experiment})` }));
    const answer = isNum(c.answer)
      ? `${c.dim_name}90 = ${fmt(c.answer)}, interval ${interval(c.interval, "not estimated")}`
      : c.status_text;
    card.appendChild(h("p", { class: "status" }, [
      answer + " · ",
      h("a", { href: c.url, target: "_blank", rel: "noopener", text: "MLflow run ↗" }),
    ]));
    if (!c.probes.length) {
      card.appendChild(h("p", { class: "empty", text: "No probe has finished yet." }));
      card.appendChild(notes(c.notes.filter((n) => n !== "no probe has finished yet")) || h("span"));
      return card;
    }
    const xs = c.probes.map((p) => p.dim).concat(c.interval || [], [c.answer]);
    const ys = c.probes.map((p) => p.y).concat([c.threshold, c.perf_full]);
    const f = frame(card, {
      chart: "curve",
      label: `metric vs ${c.dim_name} for ${c.title}`,
      data: { "search-run-id": c.run_id },
      x: { values: xs, log: true, label: c.dim_name === "r" ? "LoRA rank r" : "subspace dimension d" },
      y: { values: ys, log: false, label: "metric" },
    });
    if (c.interval && isNum(c.interval[0]) && isNum(c.interval[1])) {
      const x0 = f.sx(c.interval[0]);
      const x1 = f.sx(c.interval[1]);
      svg("rect", { class: "interval", x: x0, y: f.top, width: Math.max(x1 - x0, 2), height: f.bottom - f.top }, f.marks)
        .setAttribute("data-tip", `${c.dim_name}90 interval ${interval(c.interval)}`);
    }
    if (isNum(c.threshold)) {
      const y = f.sy(c.threshold);
      svg("line", { class: "threshold", x1: f.left, x2: f.right, y1: y, y2: y, "data-tip": `threshold ${fmt(c.threshold)}` }, f.marks);
      svg("text", { x: f.right - 2, y: y - 4, "text-anchor": "end" }, f.marks).textContent = `threshold ${fmt(c.threshold)}`;
    }
    if (isNum(c.perf_full)) {
      const y = f.sy(c.perf_full);
      svg("line", { class: "perf-full", x1: f.left, x2: f.right, y1: y, y2: y, "data-tip": `perf_full ${fmt(c.perf_full)}` }, f.marks);
    }
    if (isNum(c.answer)) {
      const x = f.sx(c.answer);
      svg("line", { class: "answer", x1: x, x2: x, y1: f.top, y2: f.bottom, "data-answer": c.answer }, f.marks);
      const left = x > f.right - 70; // near the right edge the label goes left of the line
      svg("text", {
        class: "mark-label", x: left ? x - 4 : x + 4, y: f.top + 10, "text-anchor": left ? "end" : "start",
      }, f.marks).textContent = `${c.dim_name}90 = ${fmt(c.answer)}`;
    }
    // probes at the same point spread sideways by seed, so that every seed stays visible
    const byDim = new Map();
    for (const p of c.probes) {
      if (!byDim.has(p.dim)) byDim.set(p.dim, []);
      byDim.get(p.dim).push(p);
    }
    for (const group of byDim.values()) {
      group.sort((a, b) => (a.seed ?? 0) - (b.seed ?? 0));
      group.forEach((p, i) => {
        const dx = (i - (group.length - 1) / 2) * 6;
        const y = isNum(p.y) ? f.sy(p.y) : f.bottom - 4;
        const outcome = outcomeKey(p.outcome);
        const tip = [
          `${c.dim_name} = ${fmt(p.dim)}, seed ${fmt(p.seed, "unknown")}`,
          `metric ${fmt(p.y, "none (not finite)")}`,
          `outcome ${OUTCOME_WORDS[outcome] === "other" ? p.outcome : OUTCOME_WORDS[outcome]}`,
          `lr ${fmt(p.lr, "not recorded")} · ${fmtSeconds(p.seconds)}`,
          "click: open the probe's MLflow run",
        ].join("\n");
        marker(f.marks, OUTCOME_SHAPE[outcome], f.sx(p.dim) + dx, y, 4, {
          "data-point": "probe",
          "data-outcome": outcome,
          "data-run-id": p.run_id,
          "data-href": p.url,
          "data-tip": tip,
        });
      });
    }
    card.appendChild(notes(c.notes) || h("span"));
    return card;
  }

  // --- view 2: d90 vs r90 across (model, task) ----------------------------------------------

  function dVsR(view) {
    const box = h("div");
    if (!view.points.length) {
      box.appendChild(h("p", { class: "empty", text: "No (model, task) has both a d90 and an r90 yet." }));
      box.appendChild(notes(view.notes) || h("span"));
      return box;
    }
    const P = view.points;
    const f = frame(box, {
      chart: "d-vs-r",
      label: "d90 against r90 per model and task",
      x: { values: P.flatMap((p) => [p.d90].concat(p.d90_interval || [])), log: true, label: "d90 (subspace dimension)" },
      y: { values: P.flatMap((p) => [p.r90].concat(p.r90_interval || [])), log: true, label: "r90 (LoRA rank)" },
    });
    f.root.style.maxWidth = "640px";
    for (const p of P) {
      const x = f.sx(p.d90);
      const y = f.sy(p.r90);
      if (p.d90_interval) errorbar(f, f.sx(p.d90_interval[0]), y, f.sx(p.d90_interval[1]), y);
      if (p.r90_interval) errorbar(f, x, f.sy(p.r90_interval[0]), x, f.sy(p.r90_interval[1]));
      marker(f.marks, METHOD_SHAPE[p.method] || "diamond", x, y, 5, {
        class: methodClass(p.method),
        "data-point": "pair",
        "data-run-id": p.d_run_id,
        "data-r-run-id": p.r_run_id,
        "data-tip": `${p.label} (${p.experiment})\n${p.method}: d90 = ${fmt(p.d90)} ${interval(p.d90_interval, "")}\nlora: r90 = ${fmt(p.r90)} ${interval(p.r90_interval, "")}${p.r90_note ? ` (${p.r90_note})` : ""}`,
      });
    }
    // names beside the points, never over each other or a marker (placeLabels leaves out a
    // label that finds no room); beyond LABELLED points, hover alone tells
    const placed = P.length > LABELLED ? 0 : placeLabels(
      f,
      P.map((p) => ({
        x: f.sx(p.d90), y: f.sy(p.r90), text: `${p.label} (${p.method})`,
        attrs: { class: "point-label", "data-label": "pair" },
      })),
      P.flatMap((p) => {
        const x = f.sx(p.d90);
        const y = f.sy(p.r90);
        const out = [{ x0: x - 7, x1: x + 7, y0: y - 7, y1: y + 7 }]; // the marker
        if (p.d90_interval) {
          const [a, b] = p.d90_interval.map(f.sx);
          out.push({ x0: Math.min(a, b), x1: Math.max(a, b), y0: y - 4, y1: y + 4 });
        }
        if (p.r90_interval) {
          const [a, b] = p.r90_interval.map(f.sy);
          out.push({ x0: x - 4, x1: x + 4, y0: Math.min(a, b), y1: Math.max(a, b) });
        }
        return out;
      }),
    );
    box.appendChild(methodLegend([...new Set(P.map((p) => p.method))]));
    const hover = placed < P.length ? ["Hover a point for its model, task and intervals."] : [];
    box.appendChild(notes(hover.concat(view.notes)) || h("span"));
    return box;
  }

  function methodLegend(methods) {
    const legend = h("div", { class: "legend" });
    for (const m of methods) {
      const icon = svg("svg", { viewBox: "0 0 14 14" });
      marker(icon, METHOD_SHAPE[m] || "diamond", 7, 7, 4.5, { class: methodClass(m) });
      legend.appendChild(h("span", {}, [icon, " " + m]));
    }
    return legend;
  }

  // --- view 3: d90 and r90 vs model parameters D, per task ----------------------------------

  function vsSize(view) {
    const box = h("div", { class: "grid" });
    if (!view.tasks.length) {
      return h("p", { class: "empty", text: "No search yet, so no answer to plot against model size." });
    }
    for (const panel of view.tasks) {
      const card = h("div", { class: "card", "data-search": panel.task });
      card.appendChild(h("h3", { text: `task ${panel.task}` }));
      const P = panel.points;
      if (!P.length) {
        card.appendChild(h("p", { class: "empty", text: "No answer with a known D for this task yet." }));
      } else {
        const f = frame(card, {
          chart: "vs-size",
          label: `d90 and r90 against model parameters for ${panel.task}`,
          data: { task: panel.task },
          x: { values: P.map((p) => p.D), log: true, label: "model parameters D" },
          y: { values: P.flatMap((p) => [p.answer].concat(p.interval || [])), log: true, label: "d90 / r90" },
        });
        const methods = [...new Set(P.map((p) => p.method))];
        // methods at the same D sit side by side, so that neither hides the other's interval
        const dodge = (p) => f.sx(p.D) + (methods.indexOf(p.method) - (methods.length - 1) / 2) * 7;
        for (const m of methods) {
          const line = P.filter((p) => p.method === m).sort((a, b) => a.D - b.D);
          if (line.length > 1) {
            svg("path", {
              class: "series " + methodClass(m),
              d: line.map((p, i) => `${i ? "L" : "M"}${dodge(p)},${f.sy(p.answer)}`).join(""),
            }, f.marks);
          }
        }
        for (const p of P) {
          const x = dodge(p);
          if (p.interval) errorbar(f, x, f.sy(p.interval[0]), x, f.sy(p.interval[1]));
          marker(f.marks, METHOD_SHAPE[p.method] || "diamond", x, f.sy(p.answer), 5, {
            class: methodClass(p.method),
            "data-point": "size",
            "data-run-id": p.run_id,
            "data-tip": `${p.model} · ${p.method} (${p.experiment})\nD = ${fmt(p.D)}\n${p.dim_name}90 = ${fmt(p.answer)} ${interval(p.interval, "")}`,
          });
        }
        card.appendChild(methodLegend(methods));
        for (const s of panel.slopes || []) {
          card.appendChild(h("p", { class: "slope", "data-slope": s.method, text: s.text }));
        }
      }
      card.appendChild(notes(panel.notes) || h("span"));
      box.appendChild(card);
    }
    return box;
  }

  // --- view 4: the summary table ------------------------------------------------------------

  const SUMMARY = [
    ["experiment", "experiment"],
    ["model", "model"],
    ["task", "task"],
    ["method", "method"],
    ["answer", "answer"],
    ["interval", "interval_lo"],
    ["probes", "probes"],
    ["perf_full", "perf_full"],
    ["bar (rule)", "threshold"],
    ["status", "status"],
    ["compute used", "compute_seconds"],
    ["MLflow run", "run_id"],
  ];
  let sortState = { key: null, dir: 1 };

  function summaryTable(rows) {
    if (!rows.length) return h("p", { class: "empty", text: "No search in these experiments yet." });
    const table = h("table", { "data-view-table": "summary" });
    const head = h("tr");
    for (const [title, key] of SUMMARY) {
      const th = h("th", { text: title, "data-key": key, scope: "col" });
      if (sortState.key === key) th.setAttribute("aria-sort", sortState.dir > 0 ? "ascending" : "descending");
      th.addEventListener("click", () => {
        sortState = { key, dir: sortState.key === key ? -sortState.dir : 1 };
        render(current);
      });
      head.appendChild(th);
    }
    table.appendChild(h("thead", {}, [head]));
    const body = h("tbody");
    const sorted = rows.slice();
    if (sortState.key) {
      const k = sortState.key;
      sorted.sort((a, b) => {
        const x = a[k];
        const y = b[k];
        if (x === null || x === undefined) return 1;
        if (y === null || y === undefined) return -1;
        return (x < y ? -1 : x > y ? 1 : 0) * sortState.dir;
      });
    }
    for (const r of sorted) {
      const running = r.status === "running";
      const num = (v, missing) => h("td", { class: isNum(v) ? "num" : "words", text: fmt(v, missing) });
      const pillClass = r.status === "found" ? "found" : running ? "running" : "warn";
      body.appendChild(h("tr", {
        "data-run-id": r.run_id,
        "data-search": [r.experiment, r.model, r.task, r.method].join(" "),
        class: running ? "running" : null,
      }, [
        h("td", { text: r.experiment }),
        h("td", { text: r.model }),
        h("td", { text: r.task }),
        h("td", { text: r.method }),
        isNum(r.answer)
          ? h("td", { class: "num", text: `${r.dim_name}90 = ${fmt(r.answer)}` + (r.method_note ? ` (${r.method_note})` : "") })
          : h("td", { class: "words", text: running ? "not yet (running)" : "none" }),
        h("td", {
          class: isNum(r.interval_lo) ? "num" : "words",
          text: interval([r.interval_lo, r.interval_hi], running ? "not yet" : "none"),
        }),
        h("td", { class: "num", text: fmt(r.probes, "0") + (running ? " so far" : "") }),
        num(r.perf_full, running ? "no baseline yet" : "no baseline"),
        isNum(r.threshold)
          ? h("td", { class: "num", text: fmt(r.threshold) + (r.threshold_rule ? ` (${r.threshold_rule})` : "") })
          : num(r.threshold, running ? "written when the search ends" : "no baseline"),
        h("td", {}, [h("span", { class: "pill " + pillClass, text: r.status_text })]),
        h("td", { class: "num", text: fmtSeconds(r.compute_seconds) }),
        h("td", {}, [h("a", {
          href: r.url, target: "_blank", rel: "noopener", "data-run-id": r.run_id,
          title: `open run ${r.run_id} in the MLflow UI`,
        }, [h("code", { text: r.run_id.slice(0, 8) }), " ↗"])]),
      ]));
    }
    table.appendChild(body);
    return table;
  }

  // --- view 5: running searches -------------------------------------------------------------

  function runningTable(rows) {
    if (!rows.length) {
      return h("p", { class: "empty", text: "No search is running (no search parent run has status RUNNING)." });
    }
    const table = h("table", { "data-view-table": "running" });
    table.appendChild(h("thead", {}, [h("tr", {}, [
      "search", "experiment", "probes finished so far", "bracket so far (fail, pass]",
      "lowest passing so far", "compute used", "last probe finished", "MLflow run",
    ].map((t) => h("th", { text: t })))]));
    const body = h("tbody");
    for (const r of rows) {
      body.appendChild(h("tr", {
        "data-live-search": r.run_id, "data-run-id": r.run_id, "data-search": r.label + " " + r.experiment,
      }, [
        h("td", { text: r.label }),
        h("td", { text: r.experiment }),
        h("td", { class: "num", "data-probes-done": r.probes_done, text: fmt(r.probes_done) }),
        r.bracket
          ? h("td", { class: "num", text: `(${fmt(r.bracket[0])}, ${fmt(r.bracket[1])}]` })
          : h("td", { class: "words", text: "not bracketed yet" }),
        h("td", { class: isNum(r.lowest_pass) ? "num" : "words", text: isNum(r.lowest_pass) ? `${r.dim_name} = ${fmt(r.lowest_pass)}` : "no pass yet" }),
        h("td", { class: "num", text: fmtSeconds(r.compute_seconds) }),
        h("td", { class: isNum(r.seconds_since_last) ? "num" : "words", text: isNum(r.seconds_since_last) ? fmtSeconds(r.seconds_since_last) + " ago" : "none yet" }),
        h("td", {}, [h("a", { href: r.url, target: "_blank", rel: "noopener", "data-run-id": r.run_id }, [h("code", { text: r.run_id.slice(0, 8) }), " ↗"])]),
      ]));
    }
    table.appendChild(body);
    return table;
  }

  // --- the page -----------------------------------------------------------------------------

  function section(id, title, hint, content) {
    return h("section", { id, "data-view": id }, [
      h("h2", { text: title }),
      hint ? h("p", { class: "hint", text: hint }) : null,
      content,
    ]);
  }

  function legend() {
    const box = document.getElementById("legend");
    box.textContent = "";
    for (const outcome of ["pass", "fail", "diverged", "stopped", "error", "other"]) {
      const icon = svg("svg", { viewBox: "0 0 14 14" });
      marker(icon, OUTCOME_SHAPE[outcome], 7, 7, 4.5, { "data-outcome": outcome });
      const hidden = document.body.classList.contains("hide-" + outcome);
      const button = h("button", { type: "button", "aria-pressed": hidden ? "false" : "true", title: "show or hide these probes" }, [icon, OUTCOME_WORDS[outcome]]);
      button.addEventListener("click", () => {
        document.body.classList.toggle("hide-" + outcome);
        button.setAttribute("aria-pressed", document.body.classList.contains("hide-" + outcome) ? "false" : "true");
      });
      box.appendChild(button);
    }
  }

  function meta(data) {
    const el = document.getElementById("meta");
    const experiments = data.experiments.map((e) => `${e.name} (${e.runs} runs)`).join(", ") || "none";
    el.textContent = "";
    el.append(
      `experiments: ${experiments} · store `,
      h("code", { text: data.tracking_uri }),
      ` · read ${new Date(data.taken_at * 1000).toLocaleString()} · run links open `,
      h("code", { text: data.mlflow_ui }),
    );
  }

  function applyFilter() {
    const words = document.getElementById("filter").value.toLowerCase().split(/\s+/).filter(Boolean);
    for (const node of document.querySelectorAll("[data-search]")) {
      const text = node.getAttribute("data-search").toLowerCase();
      node.classList.toggle("filtered-out", !words.every((w) => text.includes(w)));
    }
  }

  let current = null;

  function render(data) {
    current = data;
    meta(data);
    const app = document.getElementById("app");
    const scrollY = window.scrollY;
    app.textContent = "";
    if (data.notes.length) {
      app.appendChild(h("section", { class: "page-notes", "data-view": "notes" }, [h("h2", { text: "Not there yet" }), notes(data.notes)]));
    }
    app.appendChild(section("running", "Running searches",
      config.live
        ? "Live: probes still training are not in MLflow until they finish, so these are the probes finished so far."
        : "As of when this report was written (probes finished so far); `sweeper dashboard` shows this live.",
      runningTable(data.running)));
    app.appendChild(section("summary", "Answers",
      "One row per (model, task, method) search; compute used is the sum of its probes' seconds. Click a column to sort.",
      summaryTable(data.summary)));
    app.appendChild(section("d-vs-r", "d90 vs r90",
      "Each point is a (model, task) with a subspace answer (x) and a LoRA answer (y); bars are the intervals.",
      dVsR(data.d_vs_r)));
    app.appendChild(section("vs-size", "d90 and r90 vs model size",
      "Answers against the model's parameter count D (log-log), one panel per task; bars are the intervals.",
      vsSize(data.vs_size)));
    const grid = h("div", { class: "grid" }, data.curves.map(curveCard));
    app.appendChild(section("curves", "Metric vs d (or r), every probe",
      "Seeds at one point are spread sideways. Dashed: threshold; dotted: perf_full; blue line and band: the answer and its interval.",
      data.curves.length ? grid : h("p", { class: "empty", text: "No search in these experiments yet." })));
    applyFilter();
    window.scrollTo(0, scrollY);
    document.body.setAttribute("data-rendered", String(data.taken_at));
  }

  function tooltips() {
    const tip = document.getElementById("tooltip");
    document.addEventListener("mousemove", (event) => {
      const target = event.target.closest ? event.target.closest("[data-tip]") : null;
      if (!target) {
        tip.hidden = true;
        return;
      }
      tip.textContent = target.getAttribute("data-tip");
      tip.hidden = false;
      tip.style.left = Math.min(event.clientX + 14, window.innerWidth - 350) + "px";
      tip.style.top = event.clientY + 14 + "px";
    });
    document.addEventListener("click", (event) => {
      const target = event.target.closest ? event.target.closest("[data-href]") : null;
      if (target) window.open(target.getAttribute("data-href"), "_blank", "noopener");
    });
  }

  function poll(live) {
    const state = document.getElementById("live-state");
    state.hidden = false;
    state.textContent = `live: refreshes every ${Math.round(live.refresh_ms / 1000)} s`;
    async function once() {
      try {
        const response = await fetch(live.endpoint, { cache: "no-store" });
        const body = await response.json();
        if (!response.ok) throw new Error(body.error || response.statusText);
        render(body);
        state.textContent = `live: refreshes every ${Math.round(live.refresh_ms / 1000)} s · updated ${new Date().toLocaleTimeString()}`;
        state.classList.remove("banner");
      } catch (err) {
        state.textContent = `live: could not read new data (${err.message}); showing what was read at ${new Date(current.taken_at * 1000).toLocaleTimeString()}`;
        state.classList.add("banner");
      }
      setTimeout(once, live.refresh_ms);
    }
    setTimeout(once, live.refresh_ms);
  }

  const config = JSON.parse(document.getElementById("sweeper-config").textContent);
  legend();
  tooltips();
  document.getElementById("filter").addEventListener("input", applyFilter);
  render(JSON.parse(document.getElementById("sweeper-data").textContent));
  if (config.live) poll(config.live);
})(window.sweeperPlot);
