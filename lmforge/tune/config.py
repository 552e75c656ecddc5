"""Typed configs of the tuning commands: `lmforge finetune` (FinetuneConfig) and `lmforge synth`
(SynthConfig). A YAML file sets any subset of fields; `section.key=value` overrides win; unknown
keys are rejected by lmforge.config.from_dict, naming the closest valid key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from lmforge.errors import ConfigError
from lmforge.train.config import ParallelConfig

FORMATS = (
    "auto",
    "alpaca",
    "dolly",
    "prompt_response",
    "gsm8k",
    "self_instruct",
    "messages",
    "sharegpt",
    "oasst",
)
LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class LoraConfig:
    # LoRA (Hu et al. 2021): W x + (alpha / rank) * B A x with A (rank, in), B (out, rank), B = 0 at start.
    rank: int = 8
    alpha: float = 16.0  # the update is scaled by alpha / rank, so changing rank keeps the lr meaningful
    dropout: float = 0.05  # on the adapter's input only
    # Linear layers (by name) that get adapters. Hu et al. §7.1 adapt q and v; adapting every
    # linear layer (QLoRA, Dettmers et al. 2023 §4) often does better for the same budget.
    targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])

    def validate(self) -> None:
        checks = [
            (self.rank > 0, f"lora.rank must be positive, got {self.rank}"),
            (self.alpha > 0, f"lora.alpha must be positive, got {self.alpha}"),
            (0.0 <= self.dropout < 1.0, f"lora.dropout must be in [0, 1), got {self.dropout}"),
            (bool(self.targets), "lora.targets must name at least one linear layer"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
        for t in self.targets:
            if t not in LINEAR_NAMES + ("lm_head",):
                raise ConfigError(
                    f"lora.targets: unknown layer '{t}'; choose from {', '.join(LINEAR_NAMES)}, lm_head"
                )


@dataclass
class DpoConfig:
    # DPO (Rafailov et al. 2023); tune/dpo.py has the losses. beta 0.1 is the paper's (§6) and TRL's default.
    beta: float = 0.1  # strength of the pull towards the reference (the KL penalty's weight)
    loss: Literal["sigmoid", "ipo"] = "sigmoid"  # DPO's, or IPO (Azar et al. 2023)
    label_smoothing: float = 0.0  # cDPO: the assumed chance that a preference label is flipped (sigmoid only)
    ref: Literal["model", "precomputed"] = "model"  # a frozen copy of the start, or its log-probs computed
    # once before training (no second model in memory); LoRA always uses the base with adapters off

    def validate(self) -> None:
        if not self.beta > 0:
            raise ConfigError(f"dpo.beta must be positive, got {self.beta}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ConfigError(f"dpo.label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
        if self.label_smoothing and self.loss != "sigmoid":
            raise ConfigError("dpo.label_smoothing (cDPO) applies to the sigmoid loss only")


@dataclass
class FinetuneConfig:
    init: str = ""  # base model: a run dir (latest checkpoint) or a checkpoint dir
    data: str = ""  # SFT records: .jsonl / .jsonl.gz / .json (a JSON array)
    format: Literal[
        "auto",
        "alpaca",
        "dolly",
        "prompt_response",
        "gsm8k",
        "self_instruct",
        "messages",
        "sharegpt",
        "oasst",
    ] = "auto"  # auto: decided from the first record's keys
    oasst_paths: Literal["all", "best"] = "best"  # OpenAssistant trees: every root-to-leaf path, or the
    # path through the best-ranked reply at each step (rank 0)
    val_data: str | None = None  # held-out conversations; None = hold out val_fraction of `data`
    val_fraction: float = 0.05
    out: str = ""  # output run dir; default <init run>-sft
    system_prompt: str | None = None  # added to conversations that have no system message
    on_bad_record: Literal["skip", "error"] = "skip"  # malformed records: reported and skipped, or fatal
    objective: Literal["sft", "dpo"] = "sft"  # `--method dpo`: preference pairs (prompt, chosen, rejected)
    dpo: DpoConfig = field(default_factory=DpoConfig)
    method: Literal["full", "lora"] = "full"
    lora: LoraConfig = field(default_factory=LoraConfig)
    batching: Literal["pack", "pad"] = "pack"  # pack short examples into rows (no attention across
    # examples, positions restart per example) or pad each example to the batch's longest
    seq_len: int | None = None  # tokens per row; None = the model's block_size
    overlong: Literal["truncate", "drop"] = "truncate"  # a conversation longer than seq_len: cut at
    # seq_len tokens (keeps the start; dropped if no assistant token is left) or drop it
    epochs: float = 3.0  # passes over the training set (max_steps wins when set)
    max_steps: int | None = None
    batch_size: int = 8  # rows per micro-batch (over all data-parallel ranks)
    grad_accum: int = 1  # micro-batches per optimizer step; each assistant token of a step weighs the same
    lr: float = 1e-4  # peak; LoRA usually wants ~10x more than full fine-tuning (Hu et al. Table 9)
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    eval_every: int = 50  # validation loss every N steps and at the end; 0 = end only
    log_every: int = 10
    ckpt_every: int = 100  # a resumable checkpoint every N steps in <out>/train (and on SIGINT/SIGTERM)
    keep_last: int = 2  # such checkpoints kept; removed once the fine-tuned model is saved
    seed: int = 1337
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    chat_prompts: list[str] = field(
        default_factory=lambda: ["What is the capital of France?"]
    )  # shown at the end
    max_new_tokens: int = 64  # for the chat samples
    chat_temperature: float = 0.0  # 0 = greedy
    chat_top_k: int | None = None
    parallel: ParallelConfig = field(default_factory=ParallelConfig)  # under torchrun: dp (FSDP/DDP), tp

    def validate(self) -> None:
        checks = [
            (self.grad_accum > 0, f"grad_accum must be positive, got {self.grad_accum}"),
            (self.ckpt_every >= 0, f"ckpt_every must be >= 0 (0 = end only), got {self.ckpt_every}"),
            (self.keep_last > 0, f"keep_last must be positive, got {self.keep_last}"),
            (
                self.parallel.pp == 1,
                "finetune does not run pipeline parallel (parallel.pp > 1) yet; use dp or tp",
            ),
            (bool(self.init), "finetune needs a base model: init=RUN_DIR (or --init)"),
            (bool(self.data), "finetune needs training records: data=FILE.jsonl (or --data)"),
            (0.0 <= self.val_fraction < 1.0, f"val_fraction must be in [0, 1), got {self.val_fraction}"),
            (self.seq_len is None or self.seq_len > 1, f"seq_len must be > 1, got {self.seq_len}"),
            (self.epochs > 0, f"epochs must be positive, got {self.epochs}"),
            (
                self.max_steps is None or self.max_steps > 0,
                f"max_steps must be positive, got {self.max_steps}",
            ),
            (self.batch_size > 0, f"batch_size must be positive, got {self.batch_size}"),
            (self.lr >= 0, f"lr must be >= 0, got {self.lr}"),
            (self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}"),
            (0.0 <= self.min_lr_ratio <= 1.0, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.grad_clip >= 0, f"grad_clip must be >= 0 (0 = off), got {self.grad_clip}"),
            (self.eval_every >= 0, f"eval_every must be >= 0, got {self.eval_every}"),
            (self.log_every > 0, f"log_every must be positive, got {self.log_every}"),
            (self.max_new_tokens >= 0, f"max_new_tokens must be >= 0, got {self.max_new_tokens}"),
            (self.chat_temperature >= 0, f"chat_temperature must be >= 0, got {self.chat_temperature}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
        if self.method == "lora":
            self.lora.validate()
        if self.objective == "dpo":
            self.dpo.validate()


@dataclass
class SynthConfig:
    seeds: str = ""  # Self-Instruct seed tasks (JSONL of {"instruction", "instances": [{"input", "output"}]})
    out: str = "synth.jsonl"  # SFT records, Alpaca format; appended to, so a rerun resumes
    num_instructions: int = 100  # stop when `out` holds this many records
    # The teacher: any OpenAI-compatible server. The key is read from the environment variable
    # named by api_key_env, never from a file, so configs can be shared.
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "teacher"
    api_key_env: str = "OPENAI_API_KEY"
    endpoint: Literal["chat", "completions"] = "chat"  # /chat/completions or /completions
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 512
    # Self-Instruct (Wang et al. 2023, §2.1): 8 in-context tasks per prompt, 6 human seeds and 2
    # generated; new instructions are kept when ROUGE-L against every one in the pool is < 0.7.
    num_prompt_tasks: int = 8
    num_seed_in_prompt: int = 6
    rouge_threshold: float = 0.7
    min_instruction_words: int = 3  # Self-Instruct drops instructions under 3 or over 150 words
    max_instruction_words: int = 150
    max_output_chars: int = 4000
    blocklist: list[str] = field(
        default_factory=lambda: [
            # Self-Instruct §2.1: tasks a text model cannot do
            "image",
            "images",
            "graph",
            "graphs",
            "picture",
            "pictures",
            "file",
            "files",
            "map",
            "maps",
            "draw",
            "plot",
            "go to",
            "video",
            "audio",
            "music",
            "flowchart",
            "diagram",
        ]
    )
    refusal_patterns: list[str] = field(
        default_factory=lambda: [
            r"\bas an ai\b",
            r"\bi(?: am|'m) (?:sorry|unable|not able)\b",
            r"\bi cannot\b",
            r"\bi can't\b",
            r"\blanguage model\b",
        ]
    )
    concurrency: int = 4  # requests in flight
    retries: int = 4  # per request, after the first try
    backoff: float = 1.0  # seconds before the first retry; doubles each time (with jitter)
    timeout: float = 60.0  # seconds per request
    max_requests: int | None = None  # stop after this many teacher calls (None: 10 x num_instructions)
    seed: int = 42

    def validate(self) -> None:
        checks = [
            (bool(self.seeds), "synth needs seed tasks: seeds=FILE.jsonl (or --seeds)"),
            (self.num_instructions > 0, f"num_instructions must be positive, got {self.num_instructions}"),
            (
                self.base_url.startswith(("http://", "https://")),
                f"base_url must be http(s)://..., got {self.base_url!r}",
            ),
            (
                0 < self.num_seed_in_prompt <= self.num_prompt_tasks,
                f"num_seed_in_prompt must be in [1, num_prompt_tasks], got {self.num_seed_in_prompt}",
            ),
            (
                0.0 < self.rouge_threshold <= 1.0,
                f"rouge_threshold must be in (0, 1], got {self.rouge_threshold}",
            ),
            (
                0 < self.min_instruction_words <= self.max_instruction_words,
                "need 0 < min_instruction_words <= max_instruction_words",
            ),
            (self.max_output_chars > 0, f"max_output_chars must be positive, got {self.max_output_chars}"),
            (self.concurrency > 0, f"concurrency must be positive, got {self.concurrency}"),
            (self.retries >= 0, f"retries must be >= 0, got {self.retries}"),
            (self.backoff >= 0, f"backoff must be >= 0, got {self.backoff}"),
            (self.timeout > 0, f"timeout must be positive, got {self.timeout}"),
            (
                self.max_requests is None or self.max_requests > 0,
                f"max_requests must be positive, got {self.max_requests}",
            ),
            (self.max_tokens > 0, f"max_tokens must be positive, got {self.max_tokens}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
