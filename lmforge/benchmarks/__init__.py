"""Small subsets of the built-in benchmarks, shipped so that `lmforge eval`, `lmforge run` and
curation's decontamination work in a fresh clone with no data beside it (README.md here names the
sources, licences and sizes). The full sets: `lmforge eval --data-dir DIR` / $LMFORGE_EVAL_DATA, or
`--hub`."""

from pathlib import Path

BUNDLED = Path(__file__).resolve().parent  # arc/ hellaswag/ mmlu/ truthfulqa/ in the --data-dir layout
