"""The pictures, drawn with matplotlib's Figure + Agg canvas (no display, pyplot's global state
untouched). Each `plot_*` writes one PNG atomically and returns its path; the caller writes the
JSON behind it (cli.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lmforge.atomic import write_atomic
from lmforge.inspect.attention import AttentionMap
from lmforge.inspect.lens import Lens
from lmforge.inspect.surprise import Surprise

ATTN_CMAP = "Blues"  # 0 = white: the causal upper triangle reads as empty
DIFF_CMAP = "RdBu_r"  # blue where the second text attends less, red where more
SURPRISE_CMAP = "YlOrRd"
MONO = "DejaVu Sans Mono"  # shipped with matplotlib: surprise text is laid out by character


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, lambda tmp: fig.savefig(tmp, bbox_inches="tight"), suffix=".png")


def shown(label: str) -> str:
    return label.replace(" ", "\u00b7")  # a visible space: " bat" and "bat" are different tokens


def _heatmap(
    ax,
    probs: np.ndarray,
    queries: list[str],
    keys: list[str],
    title: str,
    cmap: str = ATTN_CMAP,
    vmin: float = 0.0,
    vmax: float = 1.0,
    labels: bool = True,
):
    image = ax.imshow(probs, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    ax.set_title(title, fontsize=9)
    if labels:
        ax.set_xticks(range(len(keys)), [shown(k) for k in keys], rotation=90, fontsize=7)
        ax.set_yticks(range(len(queries)), [shown(q) for q in queries], fontsize=7)
        ax.set_xlabel("key (attended to)", fontsize=8)
        ax.set_ylabel("query", fontsize=8)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    return image


def _size(m: AttentionMap) -> tuple[float, float]:
    return 1.6 + 0.22 * len(m.keys), 1.2 + 0.22 * len(m.queries)


def title_of(m: AttentionMap, head: int | None = None) -> str:
    stack = {"decoder": "self-attention", "encoder": "encoder self-attention", "cross": "cross-attention"}[
        m.stack
    ]
    return f"layer {m.layer} {stack}" + (f", head {head}" if head is not None else "")


def plot_head(m: AttentionMap, head: int, path: Path) -> Path:
    """One layer and head: queries down, keys across, colour = probability."""
    fig = _figure(*_size(m))
    ax = fig.add_subplot()
    image = _heatmap(ax, m.probs[head], m.queries, m.keys, title_of(m, head))
    fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02, label="attention probability")
    return _save(fig, path)


def plot_head_grid(maps: list[AttentionMap], path: Path, text: str = "") -> Path:
    """Every attention module (rows) x head (columns) as small multiples."""
    heads = max(m.probs.shape[0] for m in maps)
    fig = _figure(1.5 * heads + 1.6, 1.5 * len(maps) + 0.6)
    axes = fig.subplots(len(maps), heads, squeeze=False)
    for r, m in enumerate(maps):
        for h in range(heads):
            ax = axes[r][h]
            if h >= m.probs.shape[0]:
                ax.axis("off")
                continue
            _heatmap(ax, m.probs[h], m.queries, m.keys, f"head {h}" if r == 0 else "", labels=False)
            if h == 0:
                ax.set_ylabel(
                    title_of(m).replace(" self-attention", "").replace("-attention", ""), fontsize=8
                )
    fig.suptitle(
        f"attention, every layer x head: {text!r}" if text else "attention, every layer x head", fontsize=10
    )
    return _save(fig, path)


def plot_compare(a: AttentionMap, b: AttentionMap, text_a: str, text_b: str, path: Path) -> Path:
    """One layer: per head (rows), the first text, the second, and second minus first (same shape
    only: the difference is position by position)."""
    heads = a.probs.shape[0]
    same = a.probs.shape == b.probs.shape
    w, h = _size(a)
    fig = _figure(3 * w, h * heads)
    axes = fig.subplots(heads, 3, squeeze=False)
    if same:  # a shared symmetric scale, so small shifts still show
        scale = max(float(abs(b.probs - a.probs).max()), 0.05)
    for k in range(heads):
        _heatmap(axes[k][0], a.probs[k], a.queries, a.keys, f"{text_a!r}, head {k}")
        _heatmap(axes[k][1], b.probs[k], b.queries, b.keys, f"{text_b!r}, head {k}")
        if same:
            diff = b.probs[k] - a.probs[k]
            image = _heatmap(
                axes[k][2],
                diff,
                [f"{x}/{y}" if x != y else x for x, y in zip(a.queries, b.queries)],
                [f"{x}/{y}" if x != y else x for x, y in zip(a.keys, b.keys)],
                f"second - first, head {k}",
                DIFF_CMAP,
                -scale,
                scale,
            )
            fig.colorbar(image, ax=axes[k][2], fraction=0.05, pad=0.02)
        else:
            axes[k][2].axis("off")
            axes[k][2].text(
                0.5,
                0.5,
                f"{len(a.queries)} vs {len(b.queries)} positions:\nno position-by-position difference",
                ha="center",
                va="center",
                fontsize=9,
            )
    fig.suptitle(f"{title_of(a)}: {text_a!r} vs {text_b!r}", fontsize=11)
    return _save(fig, path)


def surprise_colour(bits: float, top: float = 16.0) -> tuple[float, float, float]:
    from matplotlib import colormaps

    r, g, b, _ = colormaps[SURPRISE_CMAP](min(bits / top, 1.0))
    return r, g, b


def plot_surprise(s: Surprise, path: Path, width: int = 48, rows: int = 24) -> Path:
    """The text with each token's background coloured by its surprise (bits, scale 0-16), then a
    table of the first `rows` tokens with their bits and top-3 predictions."""
    lines: list[list[tuple[int, str, float]]] = [[]]
    col = 0
    for t in s.tokens:
        if col + len(t.token) > width and lines[-1]:
            lines.append([])
            col = 0
        lines[-1].append((col, t.token, t.bits))
        col += len(t.token)
    rows_ = s.tokens[:rows]  # the table's rows
    text_h, table_h = 0.4 * len(lines) + 0.4, 0.25 * (len(rows_) + 1)
    fig = _figure(max(0.602 * 11 / 72 * width + 0.6, 7.0), text_h + table_h)
    grid = fig.add_gridspec(2, 1, height_ratios=[text_h, table_h], hspace=0.05)
    ax = fig.add_subplot(grid[0])
    ax.set_ylim(len(lines), -0.6)
    ax.axis("off")
    advance = 0.602 * 11  # points per character: DejaVu Sans Mono's advance width is 0.602 em
    for r, line in enumerate(lines):
        for c, token, bits in line:
            ax.annotate(
                shown(token),
                xy=(0, r),
                xycoords=("axes fraction", "data"),
                xytext=(c * advance, 0),
                textcoords="offset points",
                family=MONO,
                fontsize=11,
                va="top",
                bbox={"facecolor": surprise_colour(bits), "edgecolor": "none", "pad": 1.0},
            )
    ax.set_title(
        f"surprise per token, bits (mean {s.mean_bits:.2f}; \u00b7 = space; colour 0 \u2192 16 bits)",
        fontsize=10,
        loc="left",
    )
    table = fig.add_subplot(grid[1])
    table.axis("off")
    k = min(3, min(len(t.top) for t in rows_))
    cells = [[shown(t.token), f"{t.bits:.2f}"] + [f"{shown(w)} {p:.2f}" for w, p in t.top[:k]] for t in rows_]
    tab = table.table(
        cellText=cells,
        colLabels=["token", "bits"] + [f"top {i + 1}" for i in range(k)],
        loc="upper left",
        cellLoc="left",
        cellColours=[["white", surprise_colour(t.bits)] + ["white"] * k for t in rows_],
    )
    tab.auto_set_font_size(False)
    tab.set_fontsize(8)
    for r, t in enumerate(rows_, start=1):  # light text on the dark (surprising) cells
        tab[r, 1].get_text().set_color("white" if t.bits > 9 else "black")
    return _save(fig, path)


def plot_lens(lens: Lens, path: Path) -> Path:
    """Layers (rows, embeddings at the bottom) x positions: colour = probability of the actual
    next token; each cell names that layer's top token."""
    n, L = len(lens.tokens), len(lens.layers)
    fig = _figure(1.8 + 0.75 * n, 1.6 + 0.42 * L)
    ax = fig.add_subplot()
    vmax = max(float(lens.target_prob.max()), 0.1)  # an undertrained model's probabilities stay visible
    image = ax.imshow(
        lens.target_prob[::-1], cmap="Greens", vmin=0, vmax=vmax, aspect="auto", interpolation="nearest"
    )
    for r in range(L):
        for c in range(n):
            p = lens.target_prob[L - 1 - r, c]
            ax.text(
                c,
                r,
                shown(lens.top[L - 1 - r][c][:8]),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if p > 0.6 * vmax else "black",
            )
    ax.set_yticks(range(L), lens.layers[::-1], fontsize=8)
    ax.set_xticks(
        range(n),
        [f"{shown(i)} \u2192 {shown(t)}" for i, t in zip(lens.inputs, lens.tokens)],
        rotation=60,
        ha="right",
        fontsize=8,
    )
    ax.set_xlabel("position: input \u2192 actual next token", fontsize=8)
    ax.set_title("logit lens: each layer's top token (text), p(actual next token) (colour)", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02, label="p(actual next token)")
    return _save(fig, path)
