"""Data curation (`lmforge curate`): raw text in, clean de-duplicated documents out, all accounted for.

config.py          CurateConfig and one dataclass per stage; defaults = published values, cited
sources.py         streaming readers: JSONL(.gz/.zst), Parquet, CSV, text, HTML, WARC, saved HF datasets
text.py            normalisation (NFC, ftfy, whitespace) and `Doc`, the split-once view filters share
stage.py           the Stage interface and `Item`, a document on its way through the stages
stages.py          STAGES, the ordered list of per-document stages, and `DocPipeline` that runs it
langid.py          language id (fastText lid.176 or py3langid)
gopher.py          Gopher quality + repetition rules
c4.py              C4 rules; bad words from badwords.py (loads badwords_en.txt)
fineweb.py         FineWeb custom rules
classifier.py      fastText-style quality classifier; classifier_training.py trains or loads it for a run
perplexity.py      perplexity under a reference LM served over HTTP
pii.py             PII redaction with validators
decontam.py        13-gram benchmark decontamination
minhash.py         MinHash signatures, LSH keys
dedup.py           partitioned exact + near dedup, union-find; boilerplate.py: lines shared by many documents
pipeline.py        `curate()`: phases, resume, stats
executors.py       local processes / Ray, progress by tqdm
shards.py          output shards (JSONL/Parquet)
stats.py           accounting (input = kept + removed); report.py: report.md, `report_section`
mix.py             domain mixing to target weights
cli.py             `add_parser`, `run`

Nothing heavy is imported here; `from lmforge.data.curate.pipeline import curate` for the API.
"""
