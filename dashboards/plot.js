// sweeper's small SVG plotting library: element builders, number formatting, scales, ticks, a
// plot frame and its marks. Pure helpers that know nothing of sweeper's view data, so that
// dashboard.js holds only the views. No library and no network: render.py inlines this file
// before dashboard.js in one <script>, and the views read it as window.sweeperPlot.
window.sweeperPlot = (function () {
  "use strict";

  const SVGNS = "http://www.w3.org/2000/svg";
  const SIZE = { w: 420, h: 250, l: 56, r: 16, t: 14, b: 40 }; // a frame's viewBox and margins

  // --- element builders and numbers --------------------------------------------------------

  function isNum(v) {
    return typeof v === "number" && isFinite(v);
  }

  function svg(tag, attrs, parent) {
    const node = document.createElementNS(SVGNS, tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value !== undefined && value !== null) node.setAttribute(key, String(value));
    }
    if (parent) parent.appendChild(node);
    return node;
  }

  function h(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children || []) {
      if (child === null || child === undefined) continue;
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  // A number for people: integers with separators, others with 4 significant digits.
  // Callers pass the words to use when there is no number: the page says why, in words.
  function fmt(v, missing) {
    if (!isNum(v)) return missing;
    const a = Math.abs(v);
    if (Number.isInteger(v) && a < 1e15) return v.toLocaleString("en-US");
    if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
    return String(Number(v.toPrecision(4)));
  }

  function fmtTick(v) {
    const a = Math.abs(v);
    if (a >= 1e15) return v.toExponential(0);
    const units = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
    for (const [size, unit] of units) {
      if (a >= size) return String(Number((v / size).toPrecision(3))) + unit;
    }
    return fmt(v, "");
  }

  function fmtSeconds(s) {
    if (!isNum(s)) return "none recorded";
    if (s < 60) return s.toFixed(1) + " s";
    if (s < 3600) return (s / 60).toFixed(1) + " min";
    return (s / 3600).toFixed(2) + " h";
  }

  function interval(pair, missing) {
    return pair && isNum(pair[0]) && isNum(pair[1]) ? `[${fmt(pair[0])}, ${fmt(pair[1])}]` : missing;
  }

  // --- axes and scales ---------------------------------------------------------------------

  function axis(values, log, pad) {
    let v = values.filter((x) => isNum(x) && (!log || x > 0));
    if (!v.length) v = log ? [1, 10] : [0, 1];
    const t = log ? Math.log10 : (x) => x;
    let lo = t(Math.min(...v));
    let hi = t(Math.max(...v));
    if (hi === lo) {
      const widen = log ? 0.5 : Math.abs(lo) * 0.1 || 0.5;
      lo -= widen;
      hi += widen;
    }
    const span = hi - lo;
    return { log, t, lo: lo - span * pad, hi: hi + span * pad };
  }

  function ticks(ax) {
    if (ax.log) {
      // the roundest values first (decades, then 5, 2, 3, …), each kept only if it stays a
      // seventh of the axis away from those kept: labelled ends for one decade or forty
      const gap = (ax.hi - ax.lo) / 7;
      const kept = [];
      for (const m of [1, 5, 2, 3, 1.5, 4, 7, 6, 8, 9]) {
        for (let k = Math.floor(ax.lo) - 1; k <= Math.ceil(ax.hi); k++) {
          const t = Math.log10(m) + k;
          if (t >= ax.lo && t <= ax.hi && kept.every((c) => Math.abs(c - t) >= gap)) kept.push(t);
        }
      }
      return kept.sort((a, b) => a - b).map((t) => Number(Math.pow(10, t).toPrecision(6)));
    }
    const span = ax.hi - ax.lo;
    const raw = span / 5;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => span / s <= 6);
    const out = [];
    for (let v = Math.ceil(ax.lo / step) * step; v <= ax.hi + 1e-12; v += step) {
      out.push(Math.abs(v) < 1e-12 ? 0 : Number(v.toPrecision(12)));
    }
    return out;
  }

  // A plot frame: an <svg> with axes, grid and scales; the caller draws marks in `marks`.
  function frame(parent, o) {
    const { w, h, l, r, t, b } = SIZE;
    const ax = axis(o.x.values, o.x.log, 0.1);
    const ay = axis(o.y.values, o.y.log, 0.1);
    const root = svg("svg", {
      class: "chart",
      viewBox: `0 0 ${w} ${h}`,
      role: "img",
      "aria-label": o.label,
      "data-chart": o.chart,
    }, parent);
    for (const [key, value] of Object.entries(o.data || {})) root.setAttribute("data-" + key, value);
    const sx = (v) => l + ((ax.t(v) - ax.lo) / (ax.hi - ax.lo)) * (w - l - r);
    const sy = (v) => h - b - ((ay.t(v) - ay.lo) / (ay.hi - ay.lo)) * (h - t - b);
    const g = svg("g", { class: "axis" }, root);
    for (const v of ticks(ax)) {
      const x = sx(v);
      svg("line", { class: "grid-line", x1: x, x2: x, y1: t, y2: h - b }, g);
      svg("text", { x, y: h - b + 14, "text-anchor": "middle" }, g).textContent = fmtTick(v);
    }
    for (const v of ticks(ay)) {
      const y = sy(v);
      svg("line", { class: "grid-line", x1: l, x2: w - r, y1: y, y2: y }, g);
      svg("text", { x: l - 6, y: y + 4, "text-anchor": "end" }, g).textContent = fmtTick(v);
    }
    svg("path", { d: `M${l},${t} V${h - b} H${w - r}`, fill: "none" }, g);
    svg("text", { class: "axis-label", x: (l + w - r) / 2, y: h - 6, "text-anchor": "middle" }, g)
      .textContent = o.x.label + (o.x.log ? " (log)" : "");
    svg("text", {
      class: "axis-label", x: 12, y: (t + h - b) / 2, "text-anchor": "middle",
      transform: `rotate(-90 12 ${(t + h - b) / 2})`,
    }, g).textContent = o.y.label + (o.y.log ? " (log)" : "");
    const marks = svg("g", { class: "marks" }, root);
    return { root, marks, sx, sy, left: l, right: w - r, top: t, bottom: h - b };
  }

  // A point mark of `shape` (circle, square, cross, triangle, diamond) and radius r at (x, y).
  function marker(parent, shape, x, y, r, attrs) {
    if (shape === "square") {
      return svg("rect", { x: x - r, y: y - r, width: 2 * r, height: 2 * r, ...attrs }, parent);
    }
    let d = null;
    if (shape === "cross") d = `M${x - r},${y - r}L${x + r},${y + r}M${x - r},${y + r}L${x + r},${y - r}`;
    else if (shape === "triangle") d = `M${x},${y - r * 1.2}L${x + r * 1.1},${y + r * 0.8}L${x - r * 1.1},${y + r * 0.8}Z`;
    else if (shape === "diamond") d = `M${x},${y - r * 1.3}L${x + r},${y}L${x},${y + r * 1.3}L${x - r},${y}Z`;
    return d === null ? svg("circle", { cx: x, cy: y, r, ...attrs }, parent) : svg("path", { d, ...attrs }, parent);
  }

  function errorbar(f, x0, y0, x1, y1) {
    const cap = 3;
    svg("line", { class: "errorbar", x1: x0, y1: y0, x2: x1, y2: y1 }, f.marks);
    if (x0 === x1) {
      for (const y of [y0, y1]) svg("line", { class: "errorbar", x1: x0 - cap, x2: x0 + cap, y1: y, y2: y }, f.marks);
    } else {
      for (const x of [x0, x1]) svg("line", { class: "errorbar", x1: x, x2: x, y1: y0 - cap, y2: y0 + cap }, f.marks);
    }
  }

  // --- point labels that never overlap -------------------------------------------------------

  const LABEL_FONT = 11; // svg.chart text's font-size (dashboard.css), in viewBox units
  let measure = null;

  // A label's width in viewBox units, measured in the page's own font (a canvas measures text
  // that is not in the document yet); a generous estimate where no canvas is available.
  function textWidth(text) {
    if (measure === null) {
      const canvas = document.createElement("canvas");
      measure = canvas.getContext ? canvas.getContext("2d") : undefined;
      if (measure) measure.font = `${LABEL_FONT}px ${getComputedStyle(document.body).fontFamily}`;
    }
    return measure ? measure.measureText(text).width : text.length * LABEL_FONT * 0.62;
  }

  function overlaps(a, b) {
    return a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1;
  }

  // Labels beside their points, placed greedily: each takes the first spot around its point
  // (right, left, above, below, then further out with a leader line) whose box stays inside
  // the plot and clear of every label placed before and every obstacle (markers, error bars).
  // A label that finds no spot is left out (its point's hover still tells), never drawn over
  // another. items: [{ x, y, text, attrs }]; obstacles: [{ x0, y0, x1, y1 }]. Returns how many
  // were drawn.
  function placeLabels(f, items, obstacles) {
    const pad = 2;
    const height = LABEL_FONT + 4; // the glyphs, with a margin above and below
    const boxes = obstacles.slice();
    let drawn = 0;
    const order = items.map((item, i) => i).sort((a, b) => items[a].x - items[b].x || items[a].y - items[b].y);
    for (const i of order) {
      const it = items[i];
      const w = textWidth(it.text) + pad;
      const spots = [];
      for (let ring = 0; ring < 10; ring++) {
        const dy = 9 + ring * (height + 1); // from the point to the nearer edge of the box
        const dx = 8 + ring * 6;
        spots.push(
          { x0: it.x + dx, y0: it.y - height / 2 - (ring ? dy - 9 : 0) },
          { x0: it.x + dx, y0: it.y - height / 2 + (ring ? dy - 9 : 0) },
          { x0: it.x - dx - w, y0: it.y - height / 2 - (ring ? dy - 9 : 0) },
          { x0: it.x - dx - w, y0: it.y - height / 2 + (ring ? dy - 9 : 0) },
          { x0: it.x - w / 2, y0: it.y - dy - height },
          { x0: it.x - w / 2, y0: it.y + dy },
        );
      }
      const spot = spots
        .map((s) => ({ x0: s.x0, x1: s.x0 + w, y0: s.y0, y1: s.y0 + height }))
        .find((b) => b.x0 >= f.left + 2 && b.x1 <= f.right && b.y0 >= f.top && b.y1 <= f.bottom &&
          boxes.every((o) => !overlaps(b, o)));
      if (!spot) continue;
      boxes.push(spot);
      const cx = Math.max(spot.x0, Math.min(it.x, spot.x1));
      const cy = Math.max(spot.y0, Math.min(it.y, spot.y1));
      if (Math.hypot(cx - it.x, cy - it.y) > 14) {
        svg("line", { class: "leader", x1: it.x, y1: it.y, x2: cx, y2: cy }, f.marks);
      }
      const text = svg("text", { ...it.attrs, x: spot.x0 + pad / 2, y: spot.y1 - 4 }, f.marks);
      text.textContent = it.text;
      drawn++;
    }
    return drawn;
  }

  // axis, ticks and fmtTick stay private: frame is the way to a scaled plot
  return Object.freeze({
    isNum, svg, h, fmt, fmtSeconds, interval, frame, marker, errorbar, placeLabels,
  });
})();
