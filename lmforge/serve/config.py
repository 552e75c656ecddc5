"""Decoding options, and the server's request-size default."""

from __future__ import annotations

from dataclasses import dataclass, field

from lmforge.errors import ConfigError

# torch.Generator.manual_seed takes any integer in [-2**63, 2**64 - 1] (a negative seed wraps).
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1
# `lmforge serve --max-request-bytes`: 8 MiB is far above any prompt that fits a served context
# (8 prompts of 32k token ids), and lets a refusal come before any work (lmforge/serve/guards.py).
DEFAULT_MAX_REQUEST_BYTES = 8 * 2**20


@dataclass
class SampleConfig:
    prompt: str = "\n"  # text the sample continues
    max_new_tokens: int = 200
    temperature: float = 0.8  # 0 = greedy
    top_k: int | None = 200  # keep the k most likely tokens; None = all
    top_p: float | None = None  # nucleus sampling: smallest set with this much mass; None = off
    seed: int | None = 1337  # None = nondeterministic
    num_samples: int = 1
    stop: list[str] = field(default_factory=list)  # stop strings (end-of-text always stops)
    # torch.compile the one-token decoding step (decoder models): faster tokens after seconds of
    # compiling on the first call, and once more when batch size or length first vary (bench/RESULTS.md)
    compile: bool = False

    def validate(self) -> None:
        """Raise ConfigError naming the first impossible option."""
        checks = [
            (self.max_new_tokens >= 0, f"sample.max_new_tokens must be >= 0, got {self.max_new_tokens}"),
            (self.temperature >= 0, f"sample.temperature must be >= 0 (0 = greedy), got {self.temperature}"),
            (self.top_k is None or self.top_k >= 1, f"sample.top_k must be >= 1 or null, got {self.top_k}"),
            (
                self.top_p is None or 0 < self.top_p <= 1,
                f"sample.top_p must be in (0, 1] or null, got {self.top_p}",
            ),
            (self.num_samples >= 1, f"sample.num_samples must be >= 1, got {self.num_samples}"),
            (
                self.seed is None or SEED_MIN <= self.seed <= SEED_MAX,
                f"sample.seed must be in [-2**63, 2**64 - 1] or null, got {self.seed}",
            ),
            (
                all(isinstance(s, str) and s for s in self.stop),
                f"sample.stop strings must be non-empty, got {self.stop!r}",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
