"""`report.html`: one self-contained page (no external file, script or font) per evaluation.

The metric table, then one table row per dataset row: the image (an inlined JPEG thumbnail),
the question, the reference and each model's answer, wrong ones (exact match 0) marked. A few
lines of inline script sort the rows: by row, models disagreeing first, or by how many models
are wrong. Everything user-provided is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any

THUMB = 160

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.3em .6em;vertical-align:top;text-align:left}
th{background:#f3f3f3}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.ok{background:#eefbea}
td.wrong{background:#fdecec}
td.wrong::before{content:"\\2717  ";color:#b00}
td.ok::before{content:"\\2713  ";color:#080}
tr.differ td.idx{border-left:4px solid #e69500}
img.thumb{max-width:160px;max-height:160px;image-rendering:pixelated}
.controls button{margin-right:.4em}
.muted{color:#777}
"""

_JS = """
function sortRows(how){
  const body=document.getElementById('rows');
  const rows=Array.from(body.querySelectorAll('tr'));
  const key=r=>{
    const i=Number(r.dataset.row), d=Number(r.dataset.differ), w=Number(r.dataset.wrong);
    if(how==='differ') return [-d,-w,i];
    if(how==='wrong') return [-w,-d,i];
    return [i];
  };
  rows.sort((a,b)=>{const x=key(a),y=key(b);
    for(let k=0;k<x.length;k++){if(x[k]!==y[k]) return x[k]-y[k];} return 0;});
  rows.forEach(r=>body.appendChild(r));
}
"""


def thumbnail_data_uri(image: Any, size: int = THUMB) -> str:
    """A PIL image as a `data:image/...;base64,` thumbnail (PNG when small, else JPEG)."""
    img = image.convert("RGB")
    if max(img.size) > size:
        img.thumbnail((size, size))
    buf = io.BytesIO()
    if img.size[0] * img.size[1] <= 64 * 64:
        img.save(buf, format="PNG")
        mime = "image/png"
    else:
        img.save(buf, format="JPEG", quality=85)
        mime = "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def _fmt(value: float) -> str:
    return f"{value:.3f}"


def render(report: dict, rows: Sequence[dict], images: dict[int, list[str]]) -> str:
    """The page. `rows`: one dict per dataset row with `row`, `question`, `reference` and
    `answers` ({model: {"prediction", "metrics"}}); `images`: row -> thumbnail data URIs."""
    esc = html.escape
    names = [m["name"] for m in report["models"]]
    metric_keys = list(dict.fromkeys(k for m in report["metrics"].values() for k in m))
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>vlmctl eval: {esc(', '.join(names))}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>vlmctl eval</h1>",
        f'<p class="muted">{esc(report["data"].get("description", ""))}; '
        f"{report['n']} rows, greedy, max {report['generation']['max_new_tokens']} new "
        f"tokens</p>",
        '<table id="metrics"><thead><tr><th>model</th>',
    ]
    out += [f"<th>{esc(k)}</th>" for k in metric_keys]
    out.append("</tr></thead><tbody>")
    for name in names:
        m = report["metrics"][name]
        cells = "".join(f'<td class="num">{_fmt(m.get(k, 0.0))}</td>' for k in metric_keys)
        out.append(f"<tr><th>{esc(name)}</th>{cells}</tr>")
    out.append("</tbody></table>")
    n_differ = sum(1 for r in rows if _differ(r, names))
    out.append(
        f'<p class="controls">Sort: <button onclick="sortRows(\'row\')">by row</button>'
        f"<button onclick=\"sortRows('differ')\">models differ first ({n_differ})</button>"
        f"<button onclick=\"sortRows('wrong')\">most wrong first</button></p>"
    )
    out.append('<table id="predictions"><thead><tr><th>#</th><th>image</th><th>question</th>')
    out.append("<th>reference</th>")
    out += [f"<th>{esc(n)}</th>" for n in names]
    out.append('</tr></thead><tbody id="rows">')
    for r in rows:
        differ = _differ(r, names)
        wrong = sum(1 for n in names if not _right(r, n))
        imgs = (
            "".join(
                f'<img class="thumb" alt="row {r["row"]} image {j}" src="{uri}">'
                for j, uri in enumerate(images.get(r["row"], []))
            )
            or '<span class="muted">(no image)</span>'
        )
        cls = ' class="differ"' if differ else ""
        out.append(
            f'<tr{cls} data-row="{r["row"]}" data-differ="{int(differ)}" data-wrong="{wrong}">'
            f'<td class="idx num">{r["row"]}</td><td>{imgs}</td><td>{esc(r["question"])}</td>'
            f"<td>{esc(r['reference'])}</td>"
        )
        for n in names:
            ans = r["answers"][n]
            state = "ok" if _right(r, n) else "wrong"
            f1 = ans["metrics"].get("token_f1", 0.0)
            out.append(
                f'<td class="{state}" title="token F1 {f1:.2f}">{esc(ans["prediction"])}</td>'
            )
        out.append("</tr>")
    out.append("</tbody></table>")
    out.append(f"<script>{_JS}</script></body></html>")
    return "\n".join(out) + "\n"


def _right(row: dict, name: str) -> bool:
    return row["answers"][name]["metrics"].get("exact_match", 0.0) >= 1.0


def _differ(row: dict, names: Sequence[str]) -> bool:
    """Models disagree: different normalised answers (or one right and one wrong)."""
    from vlmctl.metrics import normalize_answer

    answers = {normalize_answer(row["answers"][n]["prediction"]) for n in names}
    return len(answers) > 1
