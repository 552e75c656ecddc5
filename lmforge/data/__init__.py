"""Data: documents in, token shards out, batches for training.

documents.py  read_documents(path), embedded_corpus(): stream {"id", "text", "source", "meta"}
shards.py     encode_corpus(docs, tokenizer, out_dir, cfg) -> meta; load_meta; check_tokenizer
loader.py     TokenLoader: deterministic, resumable batches from memory-mapped shards
config.py     TokenizerConfig, DataConfig
curate/       data curation: filters, dedup, the pipeline runner

Nothing is imported here, so worker processes (and `import lmforge.data.documents`) stay light.
"""
