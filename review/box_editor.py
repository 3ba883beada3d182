"""A box editor for the browser: a gr.HTML component whose script lets the reviewer draw, move,
resize and delete boxes on the image; the model's boxes stay visible beside them, dashed.

Gradio has no box-drawing input (gr.ImageEditor paints strokes; gr.AnnotatedImage only displays), so
this is gr.HTML with `js_on_load` (Gradio 6): the value is a dict
    {"src": data URL of the display image, "w": width, "h": height (original pixels),
     "boxes": [[x1, y1, x2, y2], ...] the reviewer's boxes, "ref": [...] the model's boxes}
and after each edit the script sets props.value and fires the custom event `boxes_edited`.
Coordinates are original-image pixels throughout (the SVG's viewBox), whatever size the page shows.
"""
from __future__ import annotations

import base64
import io
from typing import Any

from PIL import Image

DISPLAY_SIDE = 1024  # the page gets a copy at most this big; boxes stay in original pixels

HTML_TEMPLATE = """
${value && value.src ? `
<div class="bx-stage" style="aspect-ratio: ${value.w} / ${value.h}">
  <img class="bx-img" src="${value.src}" draggable="false" alt="image under review"/>
  <svg class="bx-svg" viewBox="0 0 ${value.w} ${value.h}" preserveAspectRatio="none">
    ${(value.ref || []).map(b => `<rect class="bx-ref" x="${b[0]}" y="${b[1]}" width="${b[2] - b[0]}"
        height="${b[3] - b[1]}" vector-effect="non-scaling-stroke"/>`).join('')}
    ${(value.boxes || []).map((b, i) => `<rect class="bx-box" data-i="${i}" x="${b[0]}" y="${b[1]}"
        width="${b[2] - b[0]}" height="${b[3] - b[1]}" vector-effect="non-scaling-stroke"/>
      <rect class="bx-handle" data-i="${i}" x="${b[2] - value.hs}" y="${b[3] - value.hs}"
        width="${2 * value.hs}" height="${2 * value.hs}" vector-effect="non-scaling-stroke"/>`).join('')}
  </svg>
</div>
<div class="bx-help">Drag on the image to draw a box, drag a box to move it, drag its corner square to
resize it, double-click a box to delete it. Green: your boxes; dashed red: the model's.</div>
` : `<div class="bx-empty">Ask the model in the Read tab first: its boxes appear here to correct.</div>`}
"""

CSS_TEMPLATE = """
.bx-stage { position: relative; width: 100%; max-width: 560px; user-select: none; touch-action: none; }
.bx-img { position: absolute; inset: 0; width: 100%; height: 100%; display: block; }
.bx-svg { position: absolute; inset: 0; width: 100%; height: 100%; cursor: crosshair; }
.bx-ref { fill: none; stroke: #ff2020; stroke-width: 2; stroke-dasharray: 6 4; pointer-events: none; }
.bx-box { fill: rgba(0, 255, 0, 0.08); stroke: #00ff00; stroke-width: 3; cursor: move; }
.bx-handle { fill: #00ff00; stroke: #003300; stroke-width: 1; cursor: nwse-resize; }
.bx-help, .bx-empty { font-size: 0.9em; opacity: 0.8; margin-top: 4px; }
"""

JS_ON_LOAD = """
let drag = null;
const MIN_SIDE = 3;  // in original pixels: a shorter drag is a click, not a box
function stageSvg() { return element.querySelector('.bx-svg'); }
function point(ev) {
  const svg = stageSvg(), r = svg.getBoundingClientRect(), v = props.value;
  const x = (ev.clientX - r.left) / r.width * v.w, y = (ev.clientY - r.top) / r.height * v.h;
  return [Math.min(Math.max(x, 0), v.w), Math.min(Math.max(y, 0), v.h)];
}
function ordered(b) {
  return [Math.min(b[0], b[2]), Math.min(b[1], b[3]), Math.max(b[0], b[2]), Math.max(b[1], b[3])]
    .map(Math.round);
}
function show(b) {
  const svg = stageSvg(), o = ordered(b), hs = props.value.hs;
  let rect = svg.querySelector(`.bx-box[data-i="${drag.i}"]`);
  if (!rect) {
    rect = document.createElementNS('http://www.w3.org/2000/svg', 'rect');
    rect.setAttribute('class', 'bx-box'); rect.setAttribute('data-i', drag.i);
    rect.setAttribute('vector-effect', 'non-scaling-stroke'); svg.appendChild(rect);
  }
  rect.setAttribute('x', o[0]); rect.setAttribute('y', o[1]);
  rect.setAttribute('width', o[2] - o[0]); rect.setAttribute('height', o[3] - o[1]);
  const handle = svg.querySelector(`.bx-handle[data-i="${drag.i}"]`);
  if (handle) { handle.setAttribute('x', o[2] - hs); handle.setAttribute('y', o[3] - hs); }
}
function commit(boxes) {
  props.value = {...props.value, boxes: boxes};
  trigger('boxes_edited');
}
element.addEventListener('pointerdown', (ev) => {
  const svg = stageSvg();
  if (!svg || !svg.contains(ev.target) || ev.button !== 0) return;
  ev.preventDefault();
  const p = point(ev), t = ev.target, boxes = (props.value.boxes || []).map(b => b.slice());
  const i = t.dataset && t.dataset.i !== undefined ? Number(t.dataset.i) : -1;
  if (t.classList.contains('bx-handle')) drag = {mode: 'resize', i, boxes, start: p, orig: boxes[i].slice()};
  else if (t.classList.contains('bx-box')) drag = {mode: 'move', i, boxes, start: p, orig: boxes[i].slice()};
  else { boxes.push([p[0], p[1], p[0], p[1]]); drag = {mode: 'draw', i: boxes.length - 1, boxes, start: p, orig: null}; }
});
window.addEventListener('pointermove', (ev) => {
  if (!drag) return;
  const p = point(ev), v = props.value;
  let b;
  if (drag.mode === 'draw') b = [drag.start[0], drag.start[1], p[0], p[1]];
  else if (drag.mode === 'resize') b = [drag.orig[0], drag.orig[1], p[0], p[1]];
  else {
    const o = drag.orig, w = o[2] - o[0], h = o[3] - o[1];
    const x = Math.min(Math.max(o[0] + p[0] - drag.start[0], 0), v.w - w);
    const y = Math.min(Math.max(o[1] + p[1] - drag.start[1], 0), v.h - h);
    b = [x, y, x + w, y + h];
  }
  drag.boxes[drag.i] = b;
  show(b);
});
window.addEventListener('pointerup', () => {
  if (!drag) return;
  const d = drag;
  drag = null;
  const boxes = d.boxes.map(ordered).filter(b => b[2] - b[0] >= MIN_SIDE && b[3] - b[1] >= MIN_SIDE);
  if (d.mode === 'draw' && boxes.length < d.boxes.length) { commit(props.value.boxes || []); return; }
  commit(boxes);
});
element.addEventListener('dblclick', (ev) => {
  const t = ev.target;
  if (!t.classList || !t.classList.contains('bx-box')) return;
  const i = Number(t.dataset.i);
  commit((props.value.boxes || []).filter((_, j) => j !== i));
});
"""


def display_url(data: bytes) -> str:
    """A data URL of the image scaled to at most DISPLAY_SIDE (PNG), for the page only."""
    with Image.open(io.BytesIO(data)) as img:
        img = img.convert("RGB")
        img.thumbnail((DISPLAY_SIDE, DISPLAY_SIDE))
        buf = io.BytesIO()
        img.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def editor_value(src: str, width: int, height: int, boxes: list[list[int]], ref: list[list[int]]) -> dict[str, Any]:
    return {"src": src, "w": width, "h": height, "boxes": boxes, "ref": ref,
            "hs": max(3, round(max(width, height) / 80))}


def boxes_to_text(boxes: list[list[int]]) -> str:
    return "\n".join(", ".join(str(int(v)) for v in b) for b in boxes)


def text_to_boxes(text: str) -> list[list[float]]:
    """One box per non-empty line, `x1, y1, x2, y2` (commas and/or spaces); ValueError names the line."""
    boxes = []
    for n, line in enumerate((text or "").splitlines(), 1):
        parts = line.replace(",", " ").split()
        if not parts:
            continue
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"line {n}: {line.strip()!r} is not four numbers") from None
        if len(values) != 4:
            raise ValueError(f"line {n}: {line.strip()!r} has {len(values)} numbers, a box needs 4 (x1, y1, x2, y2)")
        boxes.append(values)
    return boxes
