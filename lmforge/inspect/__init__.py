"""Look inside a trained model: attention maps, per-token surprise and the logit lens.

    inputs.py     a text as the model reads it (decoder, encoder, encoder-decoder) + the model call
    attention.py  per layer and head attention probabilities, from the model's own modules
    surprise.py   each token's loss in bits, with the top-k predictions at its position
    lens.py       the logit lens: every layer's residual stream through the final norm and head
    plots.py      the pictures (matplotlib, Agg): heat maps, head grid, comparison, surprise, lens
    render.py     the same as HTML and ANSI terminal text
    cli.py        `lmforge inspect --run R "text" [--compare "other"] [--json] [--out DIR]`
    report.py     the "Inside the model" section of a run's report.md

The /inspect page of `lmforge serve` is lmforge/serve/inspect_page.py: serve imports this package,
never the other way.
"""
