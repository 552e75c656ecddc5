"""The "Inside the model" section of a run's report.md: the seed's two sentences, the same words
with different dependencies, read by the trained model (pictures under <run>/inside/)."""

from __future__ import annotations

from pathlib import Path

from lmforge.errors import LmforgeError
from lmforge.inspect.cli import inspect_to, load
from lmforge.inspect.render import lens_table

SECTION = "Inside the model"
SENTENCES = ("I hit the baseball with a bat", "I hit the bat with a baseball")
FOLDER = "inside"


def inside_the_model(run_dir: str | Path, sentences: tuple[str, str] = SENTENCES) -> str:
    """Write the pictures (with their JSON) for the two sentences and return the section's Markdown."""
    run_dir = Path(run_dir)
    first, second = sentences
    try:
        model, tok = load(run_dir)
        a = inspect_to(model, tok, first, run_dir / FOLDER, compare=second, write_json=True, layers=[])
        b = inspect_to(model, tok, second, run_dir / FOLDER / "second", write_json=True, layers=[])
    except LmforgeError as e:
        return f"Not drawn: {e}"
    last = a["attention"][-1]
    compare = f"{FOLDER}/compare/L{last.layer}_{last.stack}.png"
    sa, sb = a["surprise"], b["surprise"]
    rows = "\n".join(
        f"| {text!r} | {len(s.tokens)} | {s.mean_bits:.2f} | {max(s.tokens, key=lambda t: t.bits).token!r} |"
        for text, s in ((first, sa), (second, sb))
    )
    return f"""How the trained model reads two sentences with the same words and different dependencies
(`lmforge inspect --run {run_dir} "text" --compare "other text"` draws any others; the JSON behind
each picture is beside it).

| sentence | tokens | surprise, bits per token | most surprising token |
|---|---|---|---|
{rows}

**Attention, every layer and head** ({first!r}; rows are queries, columns the keys they attend to):

![attention head grid]({FOLDER}/attention/heads.png)

**The two sentences side by side, and the difference** (last layer):

![attention compared]({compare})

**Surprise per token** (bits; what the model expected instead):

![surprise]({FOLDER}/surprise.png) ![surprise, second sentence]({FOLDER}/second/surprise.png)

**Logit lens** (each layer's residual stream through the final norm and head):

![logit lens]({FOLDER}/lens.png)

{lens_table(a["lens"])}
"""
