"""Data curation (`lmforge curate`): raw text in, clean de-duplicated documents out, every document accounted for.

config.py     CurateConfig and one dataclass per stage; defaults = published values, cited
sources.py    streaming readers: JSONL(.gz/.zst), Parquet, CSV, text, HTML, WARC, saved HF datasets
text.py       normalisation (NFC, ftfy, whitespace) and `Doc`, the split-once view filters share
langid.py     language id with py3langid (model inside the wheel)
gopher.py     Gopher quality + repetition rules      c4.py       C4 rules + bad words
fineweb.py    FineWeb custom rules                   pii.py      PII redaction with validators
classifier.py fastText-style quality classifier      train.py    train/load it for a run
decontam.py   13-gram benchmark decontamination       minhash.py  MinHash signatures, LSH keys
dedup.py      partitioned exact + near dedup, union-find
stages.py     the per-document chain                 pipeline.py `curate()`: phases, resume, stats
executors.py  local processes / Ray                  shards.py   output shards (JSONL/Parquet)
stats.py      accounting (input = kept + removed)    report.py   report.md, `report_section`
mix.py        domain mixing to target weights         cli.py      `add_parser`, `run`

Nothing heavy is imported here; `from lmforge.data.curate.pipeline import curate` for the API.
"""
