"""Typed options for `lmforge curate`: one dataclass per stage, defaults = the published values.

Every threshold below names the paper or reference code it comes from (see
README ("Data curation") and docs/curation-reference.md for the full comparison). A stage whose
`enabled` is false is skipped; a recipe YAML sets any subset of fields, dotted overrides win.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal

from lmforge.errors import ConfigError

FORMATS = ("auto", "jsonl", "parquet", "csv", "txt", "html", "warc", "hf_disk")


class StageConfig:
    """Marks the options of a per-document stage (stages.STAGES runs them). The CurateConfig field
    holding them is the stage's name: what `skip` lists and what removal reasons start with."""


@dataclass
class SourceConfig:
    path: str = ""  # a file or a folder
    format: Literal["auto", "jsonl", "parquet", "csv", "txt", "html", "warc", "hf_disk"] = "auto"
    domain: str = ""  # the `source` label used for mixing; "" = the record's own `source` field, else "web"
    text_field: str = "text"  # column / JSON key holding the text (jsonl, parquet, csv, hf_disk)
    id_field: str = "id"
    separator: str = ""  # txt: split each file into documents at this line (e.g. "\n\n\n"); "" = one per file


@dataclass
class NormalizeConfig(StageConfig):
    enabled: bool = True
    nfc: bool = True  # Unicode NFC (canonical composition)
    fix_encoding: bool = True  # ftfy.fix_text: mojibake, HTML entities left by scrapers, bad quotes
    whitespace: bool = True  # drop control chars, unify newlines, strip trailing spaces, squeeze blank lines


@dataclass
class LengthConfig(StageConfig):
    enabled: bool = True
    min_chars: int = 1  # empty documents are counted as `length:too_short`
    max_chars: int = 1_000_000  # C4's page cap is 1.9e5 (tfds c4_utils.is_valid_length); we only cap outliers
    max_record_bytes: int = 64 * 2**20  # a JSONL line / record above this is never loaded: `read:too_large`


@dataclass
class LangIdConfig(StageConfig):
    enabled: bool = True
    backend: Literal["fasttext", "py3langid"] = "fasttext"  # fastText lid.176 (as FineWeb) or langid.py
    languages: list[str] = field(default_factory=lambda: ["en"])  # ISO 639 codes kept; [] = keep any
    # FineWeb / datatrove LanguageFilter keep threshold 0.65 with fastText lid.176 (language_filter.py#L16)
    min_score: float = 0.65
    max_chars: int = 2000  # classify a prefix: LID cost is linear in length and a paragraph decides it


@dataclass
class GopherQualityConfig(StageConfig):
    """Rae et al. 2021 (Gopher, arXiv 2112.11446) §A.1.1; defaults as datatrove
    gopher_quality_filter.py#L18-25."""

    enabled: bool = True
    words: Literal["spacy", "whitespace"] = (
        "spacy"  # datatrove's counting (punctuation tokens included) or whitespace words
    )
    min_doc_words: int = 50
    max_doc_words: int = 100_000
    min_avg_word_length: float = 3.0
    max_avg_word_length: float = 10.0
    max_symbol_word_ratio: float = 0.1  # "#" and ellipsis each, per word
    max_bullet_lines_ratio: float = 0.9  # lines starting with a bullet
    max_ellipsis_lines_ratio: float = 0.3  # lines ending with an ellipsis
    min_alpha_words_ratio: float = 0.8  # words with at least one alphabetic character
    min_stop_words: int = 2  # distinct words of {the, be, to, of, and, that, have, with}


@dataclass
class GopherRepetitionConfig(StageConfig):
    """Gopher Table A1 (arXiv 2112.11446); datatrove gopher_repetition_filter.py#L78-83 uses the same."""

    enabled: bool = True
    words: Literal["spacy", "whitespace"] = (
        "spacy"  # n-grams of spaCy tokens over the text length (datatrove), or words
    )
    dup_line_frac: float = 0.3
    dup_para_frac: float = 0.3
    dup_line_char_frac: float = 0.2  # dolma v1.6 uses 0.3 here; the paper says 0.2
    dup_para_char_frac: float = 0.2
    top_ngram_char_frac: list[float] = field(default_factory=lambda: [0.20, 0.18, 0.16])  # n = 2, 3, 4
    dup_ngram_char_frac: list[float] = field(
        default_factory=lambda: [0.15, 0.14, 0.13, 0.12, 0.11, 0.10]
    )  # n = 5 .. 10


@dataclass
class C4Config(StageConfig):
    """Raffel et al. 2020 (T5, arXiv 1910.10683) §2.2 rules, as the TFDS code that built C4."""

    enabled: bool = True
    # The TFDS reference code (tensorflow_datasets/text/c4_utils.py: _MIN_WORDS_PER_LINE = 5,
    # _MIN_NUM_SENTENCES = 3) built C4; datatrove's C4QualityFilter swaps them to 3 and 5. We
    # follow the code that produced C4. Set 3/5 for the datatrove/FineWeb profile.
    min_words_per_line: int = 5
    min_sentences: int = 3
    max_word_length: int = 1000  # lines with a longer word are dropped
    terminal_punct: bool = True  # keep only lines ending in one of end_marks (FineWeb sets this false)
    end_marks: list[str] = field(
        default_factory=lambda: [".", "?", "!", '"']
    )  # TFDS _END_MARKS; datatrove adds "'"
    drop_javascript_lines: bool = True
    drop_policy_lines: bool = True  # "terms of use", "privacy policy", cookie notices
    drop_lorem_ipsum: bool = True
    drop_curly_brace: bool = True
    remove_citations: bool = True  # Wikipedia-style [1], [edit], [citation needed]
    bad_words: bool = True  # LDNOOBW English list (bundled), the C4 page filter


@dataclass
class FineWebConfig(StageConfig):
    """Penedo et al. 2024 (FineWeb, arXiv 2406.17557); defaults of datatrove
    fineweb_quality_filter.py#L11-21."""

    enabled: bool = True
    line_punct_thr: float = 0.12  # drop if fewer than 12% of lines end in terminal punctuation
    short_line_thr: float = 0.67  # drop if more than 67% of lines are short
    short_line_length: int = 30
    char_duplicates_ratio: float = 0.01  # drop if > 1% of characters are in duplicated lines
    new_line_ratio: float = 0.3  # drop if newlines / words > 0.3


@dataclass
class PerplexityConfig(StageConfig):
    """CCNet-style perplexity filter (Wenzek et al. 2020) with a reference LM behind an OpenAI-compatible
    /v1/completions endpoint (lmforge serve, vLLM); see perplexity.py."""

    enabled: bool = False
    endpoint: str = ""  # e.g. http://127.0.0.1:8000/v1
    model: str = ""  # served model name; "" = the endpoint's first model
    max_perplexity: float = 0.0  # remove documents above this; 0 = only record meta.perplexity
    max_chars: int = 2000  # score the first characters of each document (cut at a line end)
    api_key_env: str = ""  # environment variable holding the endpoint's API key, if it needs one
    timeout: float = 120.0
    retries: int = 3


@dataclass
class ClassifierConfig(StageConfig):
    """fastText-style quality classifier (hashed word 1-2-grams + logistic regression, scikit-learn)."""

    enabled: bool = False
    model: str = ""  # a saved classifier (.npz); if missing it is trained from the sets below
    positive: list[str] = field(default_factory=list)  # files/folders of high-quality reference text
    negative: list[str] = field(default_factory=list)  # random web text
    labelled: list[str] = field(default_factory=list)  # JSONL with a `label_field` (1 = good), e.g. DCLM
    label_field: str = "label"
    n_features: int = 2**20
    ngrams: int = 2  # word n-grams 1..ngrams (DCLM's fastText used bigrams)
    threshold: float = 0.5  # keep if P(good) >= threshold
    mode: Literal["threshold", "pareto"] = "threshold"
    pareto_alpha: float = 9.0  # GPT-3 (Brown et al. 2020, App. A): keep if np.random.pareto(9) > 1 - score
    holdout: float = 0.2  # share of the training set held out for precision/recall
    seed: int = 0


@dataclass
class PIIConfig(StageConfig):
    enabled: bool = True
    email: bool = True
    ip: bool = True  # IPv4 and IPv6; only globally routable addresses (as datatrove PIIFormatter)
    phone: bool = True
    credit_card: bool = True  # Luhn-checked
    allow: list[str] = field(default_factory=list)  # exact strings never redacted (e.g. a support address)
    allow_domains: list[str] = field(default_factory=lambda: ["example.com", "example.org"])


@dataclass
class DecontConfig(StageConfig):
    enabled: bool = True
    # folder with arc/ hellaswag/ mmlu/ truthfulqa/ gsm8k/; "bundled" = the few hundred items per benchmark
    # shipped in lmforge/benchmarks/ (catches leaks of those only: point it at the full sets); "" = stage off
    benchmarks: str = "bundled"
    ngram: int = 13  # GPT-3 (Brown et al. 2020 §4) and NeMo TaskDecontamination use 13-grams
    mode: Literal["remove", "flag"] = "remove"


@dataclass
class DedupConfig:
    exact: bool = True  # hash of the normalised text
    minhash: bool = True
    # FineWeb (datatrove minhash.py#L27-57, examples/fineweb.py): 5-word shingles, 14 bands x 8 rows,
    # threshold ~(1/14)^(1/8) = 0.72, P(candidate | J=0.8) = 0.924.
    shingle_words: int = 5
    bands: int = 14
    rows: int = 8
    verify_threshold: float = 0.0  # > 0: drop candidate pairs whose signature Jaccard is below this
    partitions: int = 4  # hash-range partitions per band in the global step (more = less memory each)
    seed: int = 1
    # The text exact keys and signatures are taken from: "cleaned" = after C4's line rules and PII
    # placeholders, as FineWeb (its MinHash runs on the filtered output); "original" = the
    # normalised input, so copies whose line breaks differ (and so lose different lines) still
    # match (bench/curate_dedup_quality.py). The kept text is the cleaned one either way.
    signature_text: Literal["cleaned", "original"] = "cleaned"
    # Cross-document boilerplate (off at 0): a line (normalised as cc_net: case, digits, punctuation)
    # in at least this many distinct kept documents is removed from all of them.
    boilerplate_min_docs: int = 0


@dataclass
class MixConfig:
    enabled: bool = False
    weights: dict = field(
        default_factory=dict
    )  # domain -> target share of tokens, e.g. {web: 0.7, books: 0.3}
    target_tokens: int = 0  # 0 = as many as the scarcest domain allows without repeating it
    tokenizer: str = ""  # tokenizer.json for exact token counts; "" = whitespace words
    seed: int = 0


@dataclass
class CurateConfig:
    sources: list[SourceConfig] = field(default_factory=list)  # empty = the --input path, format auto
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    length: LengthConfig = field(default_factory=LengthConfig)
    lang_id: LangIdConfig = field(default_factory=LangIdConfig)
    gopher_repetition: GopherRepetitionConfig = field(default_factory=GopherRepetitionConfig)
    gopher_quality: GopherQualityConfig = field(default_factory=GopherQualityConfig)
    c4: C4Config = field(default_factory=C4Config)
    fineweb: FineWebConfig = field(default_factory=FineWebConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    perplexity: PerplexityConfig = field(default_factory=PerplexityConfig)
    pii: PIIConfig = field(default_factory=PIIConfig)
    decontamination: DecontConfig = field(default_factory=DecontConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    # Per-domain exceptions: domain -> stages not applied to its documents. Web heuristics assume
    # web pages (C4 drops lines without terminal punctuation, which would gut verse and dialogue),
    # so a recipe mixing books and web can say {books: [c4, fineweb, gopher_repetition]}.
    skip: dict = field(default_factory=dict)
    workers: int = 0  # local processes; 0 = all cores
    executor: Literal["local", "ray"] = "local"
    ray_address: str = ""  # "" = start a local Ray instance; "auto" = join the running cluster
    shard_bytes: int = 64 * 2**20  # plain JSONL files larger than this are split into byte ranges
    output_format: Literal["jsonl", "jsonl.gz", "jsonl.zst", "parquet"] = "jsonl.gz"
    label_field: str = ""  # meta key with human quality labels (1 good / 0 bad): agreement per stage
    examples_per_reason: int = 3  # removed examples kept for report.md
    seed: int = 0

    def validate(self) -> None:
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0 (0 = all cores), got {self.workers}")
        if self.shard_bytes < 1024:
            raise ConfigError(f"shard_bytes must be at least 1024, got {self.shard_bytes}")
        d = self.dedup
        if d.bands < 1 or d.rows < 1 or d.shingle_words < 1 or d.partitions < 1:
            raise ConfigError(
                "dedup.bands, dedup.rows, dedup.shingle_words and dedup.partitions must be >= 1"
            )
        if d.boilerplate_min_docs < 0 or d.boilerplate_min_docs == 1:
            raise ConfigError(
                f"dedup.boilerplate_min_docs must be 0 (off) or >= 2, got {d.boilerplate_min_docs}"
            )
        if not 0.0 <= d.verify_threshold <= 1.0:
            raise ConfigError(f"dedup.verify_threshold must be in [0, 1], got {d.verify_threshold}")
        if not 0.0 <= self.lang_id.min_score <= 1.0:
            raise ConfigError(f"lang_id.min_score must be in [0, 1], got {self.lang_id.min_score}")
        if len(self.gopher_repetition.top_ngram_char_frac) != 3:
            raise ConfigError("gopher_repetition.top_ngram_char_frac needs 3 values (n = 2, 3, 4)")
        if len(self.gopher_repetition.dup_ngram_char_frac) != 6:
            raise ConfigError("gopher_repetition.dup_ngram_char_frac needs 6 values (n = 5 .. 10)")
        if self.decontamination.ngram < 1:
            raise ConfigError(f"decontamination.ngram must be >= 1, got {self.decontamination.ngram}")
        for domain, stages in self.skip.items():
            unknown = [x for x in (stages or []) if x not in SKIPPABLE]
            if not isinstance(stages, list) or unknown:
                raise ConfigError(
                    f"skip.{domain} must be a list of stage names from {', '.join(SKIPPABLE)}, got {stages!r}"
                )
        for s in self.sources:
            if not s.path:
                raise ConfigError("every entry of sources needs a path")
        if self.mix.enabled:
            if not self.mix.weights:
                raise ConfigError("mix.enabled needs mix.weights, e.g. {web: 0.7, books: 0.3}")
            bad = {k: v for k, v in self.mix.weights.items() if not isinstance(v, (int, float)) or v < 0}
            if bad or sum(self.mix.weights.values()) <= 0:
                raise ConfigError(
                    f"mix.weights must be non-negative numbers with a positive sum, got {self.mix.weights}"
                )
        p = self.perplexity
        if p.enabled and not p.endpoint:
            raise ConfigError("perplexity.enabled needs perplexity.endpoint (an OpenAI-compatible /v1 URL)")
        if p.max_perplexity < 0 or p.max_chars < 16 or p.retries < 0:
            raise ConfigError("perplexity.max_perplexity must be >= 0, max_chars >= 16 and retries >= 0")
        c = self.classifier
        if c.enabled and not (c.model or c.positive or c.labelled):
            raise ConfigError(
                "classifier.enabled needs classifier.model, or classifier.positive + negative, "
                "or classifier.labelled to train one"
            )
        if not 0.0 < c.holdout < 1.0:
            raise ConfigError(f"classifier.holdout must be between 0 and 1, got {c.holdout}")


def _stage_fields() -> tuple[str, ...]:
    # dataclass fields know their factory, not their (string) annotation, under
    # `from __future__ import annotations`
    return tuple(
        f.name
        for f in fields(CurateConfig)
        if isinstance(f.default_factory, type) and issubclass(f.default_factory, StageConfig)
    )


SKIPPABLE = _stage_fields()  # the per-document stages, in run order (tests check it against stages.STAGES)
