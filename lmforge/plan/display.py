"""What `lmforge plan` prints: the plan as a readable table, and the GPU presets."""

from __future__ import annotations

from lmforge import gpus

OPTIMIZER_NAMES = {"adamw": "AdamW", "adam": "Adam", "muon": "Muon (block matrices) + AdamW"}


def format_plan(r: dict) -> str:
    s, c, g, m, a, sh = r["sizing"], r["cost"], r["gpu"], r["memory"], r["assumptions"], r["shape"]
    lines = ["Size (Chinchilla: Hoffmann et al. 2022, Table 3 frontier and eq. 10 loss)"]
    rows = [
        ("parameters N", _n(s["params"])),
        ("training tokens D", f"{_n(s['tokens'])} ({s['tokens_per_param']:,.1f} per parameter)"),
        ("compute C = 6ND", f"{s['compute']:.3g} FLOPs"),
        ("compute with attention", f"{s['compute_model']:.3g} FLOPs ({sh['source']}, seq {sh['seq_len']})")
        if s["compute_model"]
        else None,
        (
            "compute-optimal at this C",
            (
                f"{_n(s['optimal_params'])} params on {_n(s['optimal_tokens'])} tokens "
                f"({s['optimal_tokens_per_param']:.1f} per parameter)"
            ),
        ),
        ("position", s["position"]),
        ("predicted loss", f"{s['loss']:.3f} nats/token (eq. 10; Chinchilla's data and tokenizer)"),
    ]
    lines += _rows([r for r in rows if r])
    if s["warning"]:
        lines.append(f"  warning: {s['warning']}")
    lines += [
        "",
        (
            f"Time and cost: {c['num_gpus']} x {g['label']}, {g['peak_flops'] / 1e12:,.0f} TFLOP/s "
            f"dense BF16, MFU {100 * a['mfu']:.0f}% ({a['mfu_source']})"
        ),
    ]
    lines += _rows(
        [
            ("GPU-hours", f"{c['gpu_hours']:,.0f}"),
            ("wall time", _duration(c["wall_hours"])),
            (
                "rent",
                (
                    f"${c['rent_low']:,.0f} - ${c['rent_high']:,.0f} (${g['rent_per_hour'][0]:.2f}-"
                    f"{g['rent_per_hour'][1]:.2f} per GPU-hour)"
                ),
            ),
            (
                "buy the GPUs",
                f"${c['purchase']:,.0f} ({c['num_gpus']} x ${g['price']:,.0f}; servers, network extra)",
            ),
            (
                "energy",
                (
                    f"{c['energy_mwh']:,.1f} MWh ({g['power_w']:.0f} W x GPU-hours x PUE {c['pue']:g}), "
                    f"${c['energy_cost']:,.0f} at ${c['energy_price']:g}/MWh"
                ),
            ),
        ]
    )
    shape = f"{sh['n_layer']} layers x {sh['n_embd']} wide, vocab {sh['vocab_size']:,}"
    lines += [
        "",
        (
            f"Memory per GPU ({m['gpu_memory_gb']:g} GB, {100 * m['headroom']:.0f}% usable): "
            f"{shape} ({sh['source']}), micro-batch {sh['micro_batch']} x {sh['seq_len']} tokens"
        ),
    ]
    if "per_gpu" in m:
        pg = m["per_gpu"]
        ck = "with" if pg["checkpointing"] else "without"
        other = "with" if not pg["checkpointing"] else "without"
        lines += _rows(
            [
                ("layout", m["layout"] + ("" if m["fits"] else "  (DOES NOT FIT)")),
                (
                    "precision",
                    ("bf16 weights/grads + fp32 master, " if pg["precision"] == "bf16" else "fp32, ")
                    + OPTIMIZER_NAMES[pg.get("optimizer_kind", "adamw")],
                ),
                ("weights", _gb(pg["weights"])),
                ("gradients", _gb(pg["gradients"])),
                ("optimizer state", _gb(pg["optimizer"])),
                (
                    f"activations ({ck} ckpt)",
                    (
                        f"{_gb(pg['activations'])}  ({other} checkpointing: "
                        f"{_gb(m['activations_other_checkpointing'])})"
                    ),
                ),
                (
                    "total",
                    _gb(pg["total"])
                    + (f" (+{_gb(pg['fsdp_gathered'])} FSDP gathers)" if pg["fsdp_gathered"] else ""),
                ),
            ]
        )
    else:
        lines.append(f"  {m['does_not_fit']}")
    for key, label in (
        ("fewest_gpus", "fewest GPUs"),
        ("fewest_gpus_checkpointing", "fewest, with checkpointing"),
    ):
        if key in m:
            lines += _rows([(label, m[key]["layout"])])
    if "cpu_check" in m:
        chk = m["cpu_check"]
        lines += _rows(
            [
                (
                    "CPU check (fp32)",
                    (
                        f"measured {_gb(chk['measured_bytes'])} vs predicted "
                        f"{_gb(chk['predicted_bytes'])} (grads + optimizer + activations)"
                    ),
                )
            ]
        )
    return "\n".join(lines)


def _rows(rows) -> list[str]:
    return [f"  {k:<28} {v}" for k, v in rows]


def _n(x: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def _gb(b: float) -> str:
    return f"{b / 1e9:,.2f} GB" if b >= 1e8 else f"{b / 1e6:,.1f} MB"


def _duration(hours: float) -> str:
    if hours < 1:
        return f"{hours * 60:.0f} minutes"
    if hours < 48:
        return f"{hours:.1f} hours"
    return f"{hours / 24:,.1f} days"


def format_gpus() -> str:
    """The GPU presets as a table, then each one's sources."""
    out = [
        f"{'name':<11} {'dense BF16':>11} {'memory':>7} {'power':>6} {'rent $/GPU-h':>13} {'price':>9}  GPU"
    ]
    for g in gpus.GPUS.values():
        out.append(
            f"{g.name:<11} {g.peak_flops / 1e12:>7.0f} TF/s {g.memory_gb:>5.0f}GB {g.power_w:>5.0f}W "
            f"{g.rent_per_hour[0]:>6.2f}-{g.rent_per_hour[1]:<6.2f} ${g.price:>8,.0f}  {g.label}"
        )
    out.append("\nsources:")
    out += [f"- {g.name}: {g.sources}" for g in gpus.GPUS.values()]
    return "\n".join(out)
