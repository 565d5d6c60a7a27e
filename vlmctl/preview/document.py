"""The preview document: every token by what happens to it in the loss (JSON), and its text
rendering (rich)."""

from __future__ import annotations

from typing import Any

PREVIEW_VERSION = 2  # 2: each sample has `notes`
KINDS = ("trained", "prompt", "media", "pad")
STYLES = {"trained": "bold green", "prompt": "dim", "media": "magenta", "pad": "grey50"}
_PART = {0: "pad", 1: "prompt", 2: "media", 3: "answer"}


def _media_name(piece: str) -> str:
    return "video" if "video" in piece.lower() else "image"


def _display(kind: str, ids: list[int], pieces: list[str]) -> str:
    """A span as text: media runs collapsed (`<image ×256>`), padding counted."""
    if kind == "pad":
        return f"<pad ×{len(ids)}>"
    out: list[str] = []
    i = 0
    while i < len(ids):
        j = i
        while j < len(ids) and ids[j] == ids[i]:
            j += 1
        n = j - i
        if kind == "media" and n > 1:
            out.append(f"<{_media_name(pieces[i])} ×{n}>")
        else:
            out.append("".join(pieces[i:j]))
        i = j
    return "".join(out)


def _token_kind(part: int, label: int, ignore: int) -> str:
    # Padding with a label (`mask_pad_token: false`) is trained: shown as such.
    if label != ignore:
        return "trained"
    if part == 0:
        return "pad"
    return "media" if part == 2 else "prompt"


def decode_pieces(tok: Any, ids: list[int]) -> list[str]:
    """One display piece per token. Byte-level pieces of non-Latin text (a Chinese character,
    a Korean syllable, an emoji spread over 2-4 tokens) decode to U+FFFD one at a time: such a
    run is decoded together, its text goes on its first token and the others get ""."""
    # Negative ids are media positions (Phi-3-vision), not vocabulary: the tokenizer raises.
    pieces = [tok.decode([t]) if t >= 0 else "<image>" for t in ids]
    out = list(pieces)
    i, n = 0, len(ids)
    while i < n:
        if "\ufffd" not in pieces[i]:
            i += 1
            continue
        for j in range(i + 2, min(n, i + 8) + 1):
            if min(ids[i:j]) < 0:
                break
            text = tok.decode(ids[i:j])
            if "\ufffd" not in text:
                out[i] = text
                out[i + 1 : j] = [""] * (j - i - 1)
                i = j
                break
        else:
            i += 1
    return out


def document(cs, res, rows, encoded, kept, batch, kinds, collator) -> dict:
    """The JSON document (schema in the package docstring) of the encoded rows and their batch."""
    tok = collator.tokenizer
    ignore = cs.collator.label_masking.ignore_index
    ids_b, labels_b = batch["input_ids"], batch["labels"]
    total = int(ids_b.numel())
    pad_total = int((kinds == 0).sum())
    samples = []
    k = 0
    for enc in encoded:
        notes = list(enc._prepared.example.notes) if enc._prepared is not None else []
        if enc.drop_reason:
            samples.append({
                "row": enc.row, "dropped": enc.drop_reason, "notes": notes, "length": 0,
                "original_length": enc.original_length, "truncated": False,
                "supervised_tokens": 0, "media_tokens": enc.num_media_tokens,
                "padding_tokens": 0, "text": enc.text, "spans": [], "tokens": [],
            })  # fmt: skip
            continue
        ids = ids_b[k].tolist()
        labels = labels_b[k].tolist()
        parts = kinds[k].tolist()
        k += 1
        pieces = decode_pieces(tok, ids)
        tokens = [
            {"id": t, "piece": p, "kind": _token_kind(part, lab, ignore), "part": _PART[part],
             "label": lab}
            for t, p, part, lab in zip(ids, pieces, parts, labels, strict=True)
        ]  # fmt: skip
        spans = []
        start = 0
        for i in range(1, len(tokens) + 1):
            if i == len(tokens) or tokens[i]["kind"] != tokens[start]["kind"]:
                kind = tokens[start]["kind"]
                spans.append(
                    {
                        "kind": kind,
                        "start": start,
                        "end": i,
                        "display": _display(kind, ids[start:i], pieces[start:i]),
                    }
                )
                start = i
        samples.append({
            "row": enc.row, "dropped": None, "notes": notes, "length": enc.length,
            "original_length": enc.original_length, "truncated": enc.truncated,
            "supervised_tokens": sum(1 for t in tokens if t["kind"] == "trained"),
            "media_tokens": sum(1 for t in tokens if t["part"] == "media"),
            "padding_tokens": sum(1 for t in tokens if t["part"] == "pad"),
            "text": enc.text, "spans": spans, "tokens": tokens,
        })  # fmt: skip
    doc = {
        "version": PREVIEW_VERSION,
        "config_dir": str(cs.dir),
        "model": {"model_id": res.model_id, "model_class": res.model_class,
                  "processor_class": type(collator.processor).__name__, "source": res.source},
        "rows": list(rows),
        "batch": {
            "tensors": {name: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
                        for name, t in batch.items()},
            "padding_fraction": round(pad_total / total, 4) if total else 0.0,
            "pad_tokens": pad_total,
            "total_tokens": total,
        },
        "samples": samples,
    }  # fmt: skip
    from vlmctl.packing import describe
    from vlmctl.packing_checks import validate_bins

    packing, _ = validate_bins(cs, [e.original_length for e in encoded if not e.drop_reason])
    if packing is not None:  # packing: true: the bins these rows would make in training
        doc["packing"] = {**packing, "text": describe(packing)}
    return doc


def render_preview_text(doc: dict, file: Any = None) -> None:
    """One table per sample (spans coloured by kind), the rendered chat, then the batch."""
    import sys

    from rich.console import Console
    from rich.markup import escape
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    console = Console(file=file or sys.stdout, highlight=False, soft_wrap=False)
    m = doc["model"]
    console.print(
        f"[bold]{escape(doc['config_dir'])}[/]: preview of rows "
        f"{', '.join(map(str, doc['rows']))} · {escape(m['model_class'])} + "
        f"{escape(m['processor_class'])}"
    )
    legend = Text("legend: ")
    for kind, label in (
        ("trained", "trained"),
        ("prompt", "masked (prompt)"),
        ("media", "masked (media)"),
        ("pad", "padding"),
    ):
        legend.append(f"{label}", style=STYLES[kind])
        legend.append("  ")
    console.print(legend)
    for s in doc["samples"]:
        if s["dropped"]:
            console.print(
                f"[bold]row {s['row']}[/]: [yellow]dropped ({s['dropped']})[/], "
                f"{s['original_length']} tokens before the length policy"
            )
            for note in s.get("notes") or []:
                console.print(Text(f"note: row {s['row']}: {note}", style="yellow"))
            continue
        cut = f", cut from {s['original_length']}" if s["truncated"] else ""
        table = Table(
            title=f"row {s['row']} · {s['length']} tokens{cut} · "
            f"{s['supervised_tokens']} supervised · {s['media_tokens']} media · "
            f"{s['padding_tokens']} padding",
            title_justify="left",
            expand=True,
        )
        table.add_column("tokens", no_wrap=True, justify="right")
        table.add_column("kind", no_wrap=True)
        table.add_column("text (decoded pieces)", overflow="fold", ratio=1)
        for sp in s["spans"]:
            table.add_row(
                f"{sp['start']}-{sp['end'] - 1}",
                Text(sp["kind"], STYLES[sp["kind"]]),
                Text(sp["display"], style=STYLES[sp["kind"]]),
            )
        console.print(table)
        for note in s.get("notes") or []:
            console.print(Text(f"note: row {s['row']}: {note}", style="yellow"))
        console.print(
            Panel(Text(s["text"]), title="rendered chat", title_align="left", expand=True)
        )
    b = doc["batch"]
    t = Table(title="batch", title_justify="left")
    t.add_column("tensor")
    t.add_column("shape", justify="right")
    t.add_column("dtype")
    for name, info in b["tensors"].items():
        t.add_row(name, " × ".join(map(str, info["shape"])), info["dtype"])
    console.print(t)
    console.print(
        f"padding: {b['pad_tokens']} of {b['total_tokens']} tokens "
        f"({100 * b['padding_fraction']:.1f}%)"
    )
    if doc.get("packing"):
        console.print(f"packing (train): {doc['packing']['text']}; no padding in a packed row")
