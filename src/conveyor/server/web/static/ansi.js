// ANSI SGR colour codes to DOM nodes. Text only ever goes in through textContent, so a
// log line can never become markup.
"use strict";
(function (global) {
  const SGR = /\x1b\[([0-9;]*)m/g;
  const OTHER_ESCAPES = /\x1b\[[0-9;?]*[A-La-ln-z]|\x1b\][^\x07]*\x07|\r/g;

  function palette256(n) {
    if (n < 16) return null;
    if (n >= 232) { const v = 8 + (n - 232) * 10; return `rgb(${v},${v},${v})`; }
    const i = n - 16, steps = [0, 95, 135, 175, 215, 255];
    return `rgb(${steps[Math.floor(i / 36)]},${steps[Math.floor(i / 6) % 6]},${steps[i % 6]})`;
  }

  function apply(state, params) {
    const codes = params === "" ? [0] : params.split(";").map((p) => parseInt(p || "0", 10));
    for (let i = 0; i < codes.length; i++) {
      const c = codes[i];
      if (c === 0) { state.fg = state.bg = null; state.bold = state.dim = state.italic = state.underline = false; }
      else if (c === 1) state.bold = true;
      else if (c === 2) state.dim = true;
      else if (c === 3) state.italic = true;
      else if (c === 4) state.underline = true;
      else if (c === 22) state.bold = state.dim = false;
      else if (c === 23) state.italic = false;
      else if (c === 24) state.underline = false;
      else if (c >= 30 && c <= 37) state.fg = { cls: c - 30 };
      else if (c >= 90 && c <= 97) state.fg = { cls: c - 90 + 8 };
      else if (c === 39) state.fg = null;
      else if (c >= 40 && c <= 47) state.bg = { cls: c - 40 };
      else if (c >= 100 && c <= 107) state.bg = { cls: c - 100 + 8 };
      else if (c === 49) state.bg = null;
      else if (c === 38 || c === 48) {
        let colour = null;
        if (codes[i + 1] === 5) {
          const n = codes[i + 2] || 0;
          colour = n < 16 ? { cls: n } : { css: palette256(n) };
          i += 2;
        } else if (codes[i + 1] === 2) {
          const [r, g, b] = [codes[i + 2] || 0, codes[i + 3] || 0, codes[i + 4] || 0];
          colour = { css: `rgb(${r & 255},${g & 255},${b & 255})` };
          i += 4;
        }
        if (c === 38) state.fg = colour; else state.bg = colour;
      }
    }
  }

  function styled(text, state) {
    if (!state.fg && !state.bg && !state.bold && !state.dim && !state.italic && !state.underline) {
      return document.createTextNode(text);
    }
    const span = document.createElement("span");
    span.textContent = text;
    if (state.fg) { if (state.fg.css) span.style.color = state.fg.css; else span.classList.add("a-fg" + state.fg.cls); }
    if (state.bg) { if (state.bg.css) span.style.backgroundColor = state.bg.css; else span.classList.add("a-bg" + state.bg.cls); }
    if (state.bold) span.classList.add("a-bold");
    if (state.dim) span.classList.add("a-dim");
    if (state.italic) span.classList.add("a-italic");
    if (state.underline) span.classList.add("a-underline");
    return span;
  }

  /** Append the line `text`, its colours as spans, to `target`. */
  function render(text, target) {
    const clean = text.replace(OTHER_ESCAPES, "");
    const state = {};
    let last = 0;
    SGR.lastIndex = 0;
    let match;
    while ((match = SGR.exec(clean)) !== null) {
      if (match.index > last) target.appendChild(styled(clean.slice(last, match.index), state));
      apply(state, match[1]);
      last = SGR.lastIndex;
    }
    if (last < clean.length) target.appendChild(styled(clean.slice(last), state));
  }

  global.ConveyorAnsi = { render };
})(window);
