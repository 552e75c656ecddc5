"""Surprise and the logit lens as text: a standalone HTML page and ANSI-coloured terminal output."""

from __future__ import annotations

import html

from lmforge.inspect.lens import Lens
from lmforge.inspect.plots import surprise_colour
from lmforge.inspect.surprise import Surprise


def quote(label: str) -> str:
    return f"'{label}'"  # labels are already escaped (inputs.token_label): no repr, no double backslashes


def _hex(rgb: tuple[float, float, float]) -> str:
    return "#" + "".join(f"{round(255 * c):02x}" for c in rgb)


def surprise_html(s: Surprise, title: str = "surprise per token") -> str:
    """A page: the text with each token's background coloured by its bits; hovering a token shows
    its bits and the top-k predictions (title attribute), and a table lists them all."""
    spans, rows = [], []
    for t in s.tokens:
        tip = f"{t.bits:.2f} bits, p={t.prob:.4f}; expected: " + ", ".join(
            f"{quote(w)} {p:.3f}" for w, p in t.top
        )
        spans.append(
            f'<span class="tok" style="background:{_hex(surprise_colour(t.bits))}" '
            f'data-bits="{t.bits:.4f}" title="{html.escape(tip)}">{html.escape(t.token)}</span>'
        )
        top = "".join(f"<td>{html.escape(quote(w))} {p:.3f}</td>" for w, p in t.top)
        rows.append(f"<tr><td>{html.escape(t.token)}</td><td>{t.bits:.2f}</td>{top}</tr>")
    k = max((len(t.top) for t in s.tokens), default=0)
    head = "".join(f"<th>top {i + 1}</th>" for i in range(k))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font: 15px/1.5 system-ui, sans-serif; margin: 2em; color: #1d2330; }}
.text {{ font: 17px/2 ui-monospace, "DejaVu Sans Mono", monospace; white-space: pre-wrap; }}
.tok {{ padding: 2px 0; border-radius: 2px; }}
table {{ border-collapse: collapse; margin-top: 1.5em; }}
td, th {{ border: 1px solid #d0d5dd; padding: .2em .6em; font-size: 13px; text-align: left; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Mean {s.mean_bits:.2f} bits per token ({s.kind}). Colour: 0 (pale) to 16 bits (dark red). Hover a token
for what the model expected.</p>
<div class="text">{"".join(spans)}</div>
<table><tr><th>token</th><th>bits</th>{head}</tr>
{chr(10).join(rows)}
</table></body></html>
"""


def _ansi_bg(rgb: tuple[float, float, float]) -> str:
    r, g, b = (round(255 * c) for c in rgb)
    return f"\x1b[48;2;{r};{g};{b}m\x1b[38;2;0;0;0m"  # 24-bit background, black text


RESET = "\x1b[0m"


def surprise_ansi(s: Surprise, colour: bool = True, top_k: int = 3) -> str:
    """The coloured text, then one line per token: bits and the top-k predictions."""
    text = "".join(
        f"{_ansi_bg(surprise_colour(t.bits))}{t.token}{RESET}" if colour else t.token for t in s.tokens
    )
    width = max(len(t.token) for t in s.tokens)
    lines = [text, "", f"surprise per token ({s.mean_bits:.2f} bits mean); expected instead:"]
    for t in s.tokens:
        label = (
            f"{_ansi_bg(surprise_colour(t.bits))}{t.token:<{width}}{RESET}"
            if colour
            else f"{t.token:<{width}}"
        )
        top = "  ".join(f"{quote(w)} {p:.2f}" for w, p in t.top[:top_k])
        lines.append(f"  {label} {t.bits:6.2f} bits | {top}")
    return "\n".join(lines)


def lens_table(lens: Lens) -> str:
    """Markdown: one row per layer, one column per position, cells 'top token (p actual)'."""

    def cell(x: str) -> str:
        return x.replace("|", "\\|")

    head = (
        "| layer | "
        + " | ".join(cell(f"{quote(i)} \u2192 {quote(t)}") for i, t in zip(lens.inputs, lens.tokens))
        + " |"
    )
    lines = [head, "|---" * (len(lens.tokens) + 1) + "|"]
    for r, layer in enumerate(lens.layers):
        cells = [
            cell(f"{quote(lens.top[r][c])} ({lens.target_prob[r, c]:.2f})") for c in range(len(lens.tokens))
        ]
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
