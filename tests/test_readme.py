"""The README's commands work: every shell command in its code blocks is run here, shrunk through
documented overrides (tiny model, a couple of steps, --limit), in a temporary folder, or listed in
NOT_RUN with the reason it cannot run in a test (GPU, many nodes, network, a server that runs until
stopped, hours of compute). A command that stops working fails; a README command that is in neither
list fails too, as does a list entry the README no longer has.

Commands are the lines of ```bash blocks and the command lines of indented code blocks (those
starting with a command word, or `$ `); untagged fenced blocks are program output. The in-process
commands run one after another in one Python process (`lmforge.cli.main`, what the `lmforge`
script calls) so torch is imported once; torchrun's are separate processes.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
COMMAND_WORDS = {"lmforge", "make", "pip", "python", "torchrun", "srun", "curl", "lm_eval", "export"}
ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")


def readme_commands(text: str) -> list[str]:
    """Every shell command of the README's code blocks, continuations joined, comments dropped,
    normalised to shlex.join(shlex.split(line))."""
    commands: list[str] = []
    lines = text.splitlines()
    fence: str | None = None
    pending = ""
    previous_blank = True
    in_indented = False
    for line in lines:
        if fence is None and line.startswith("```"):
            fence, previous_blank = line[3:].strip(), False
            continue
        if fence is not None:
            if line.startswith("```"):
                fence = None
            elif fence in ("bash", "sh", "shell"):
                pending = _take(pending, line, commands, shell_block=True)
            continue
        indented = line.startswith("    ") and (previous_blank or in_indented)
        in_indented = indented or (in_indented and not line.strip())
        if indented:
            pending = _take(pending, line.strip(), commands, shell_block=False)
        previous_blank = not line.strip()
    return commands


def _take(pending: str, line: str, out: list[str], shell_block: bool) -> str:
    text = (pending + " " + line.strip()).strip() if pending else line.strip()
    if text.endswith("\\"):
        return text[:-1].rstrip()
    text = text.removeprefix("$ ")
    try:
        tokens = shlex.split(text, comments=True)
    except ValueError:
        tokens = text.split()
    words = [t for t in tokens if not ENV_ASSIGNMENT.match(t)]
    if tokens and (shell_block or (words and words[0] in COMMAND_WORDS)):
        out.append(shlex.join(tokens))
    return ""


def norm(command: str) -> str:
    return shlex.join(shlex.split(command))


# ---- what cannot run in a test, and why

NETWORK = "downloads packages (network); the test suite runs inside the installed environment"
SERVER = "starts a server that runs until stopped; tests/test_serve_api.py runs it on loopback"
GPU = "needs GPUs (8 per node); the same layouts run on CPU processes in tests/test_parallel_dist.py"
NODES = "needs several nodes (and Slurm); the rendezvous is torchrun's own"
SWEEP = (
    "trains 20 models for ~20-25 minutes; tests/test_plan_sweep.py runs a shrunk grid through the "
    "same code and `lmforge plan sweep --dry-run` is run here"
)
NOT_RUN = {
    norm(c): reason
    for c, reason in {
        "make demo": (
            "creates a virtualenv and installs packages (network); it runs `lmforge run`, run here shrunk"
        ),
        "make test": "is the test suite itself",
        "make bench": "a benchmark of minutes (bench/RESULTS.md records it)",
        "pip install 'lmforge[curate]'": NETWORK,
        "pip install 'lmforge[ray]'": NETWORK,
        "lmforge curate ... --executor ray --address auto": (
            "needs a Ray cluster; `...` stands for any curate arguments"
        ),
        "lmforge serve --run runs/tiny &": SERVER,
        "lmforge curate --input crawl/ --output out/ppl perplexity.enabled=true "
        "perplexity.endpoint=http://127.0.0.1:8000/v1 perplexity.max_perplexity=500": (
            "needs the server started by the line above; tests/test_curate_perplexity.py runs the filter "
            "against lmforge serve on loopback"
        ),
        "lmforge plan sweep": SWEEP,
        "lmforge plan sweep --budgets 1e12,2e12,4e12 --workers 2 --out runs/big model.activation=gelu": SWEEP,
        "torchrun --nproc_per_node 8 -m lmforge train --config llama-1b": GPU,
        "torchrun --nproc_per_node 8 -m lmforge train --config recipe.yaml "
        "parallel.pp=2 parallel.dp=2 parallel.tp=2": GPU,
        "torchrun --nnodes 4 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint node0:29500 "
        "--rdzv-id run42 -m lmforge train --config recipe.yaml parallel.tp=8 parallel.pp=2": NODES,
        "'head=$(scontrol' show hostnames '$SLURM_JOB_NODELIST' '|' head -n '1)'": NODES,
        "srun torchrun --nnodes '$SLURM_NNODES' --nproc_per_node 8 --rdzv-backend c10d "
        "--rdzv-endpoint '$head:29500' "
        "--rdzv-id '$SLURM_JOB_ID' -m lmforge train --config recipe.yaml name=run42 parallel.tp=8": NODES,
        "lmforge eval judge --answers a.jsonl --answers-b b.jsonl --judge-url http://localhost:8000/v1 "
        "--output judge/": "needs a judge server; tests/test_eval_judge.py runs it against lmforge serve "
        "on loopback",
        "export OPENAI_API_KEY=...": "a secret for a remote teacher (network)",
        "lmforge synth --seeds my_seed_tasks.jsonl --out synth.jsonl --base-url https://api.example.com/v1 "
        "--model some-model -n 500 concurrency=8": (
            "a remote teacher model (network); tests/test_tune_synth.py runs synth against a teacher "
            "on loopback"
        ),
        "lmforge synth --seeds my_seed_tasks.jsonl --out synth.jsonl --base-url http://127.0.0.1:8000/v1 "
        "--model sft endpoint=completions": "needs a server started first (" + SERVER + ")",
        "lmforge serve --run runs/tiny/sft": SERVER,
        "lmforge serve --run runs/a --run small=runs/b/checkpoints/step_000400 --port 8080": SERVER,
        "LMFORGE_API_KEY=s3cret lmforge serve --run runs/a --host 0.0.0.0": SERVER,
        "curl -s http://127.0.0.1:8000/v1/completions -H 'Content-Type: application/json' "
        '-d \'{"model": "sft", "prompt": "Once upon a time", "max_tokens": 32, "temperature": 0}\'': (
            "talks to the server above; tests/test_serve_api.py sends these requests"
        ),
        "lmforge serve --human-eval human_eval.sqlite": SERVER,
        "lmforge human export --db human_eval.sqlite --out prefs.jsonl": (
            "needs votes cast at /human on the server above; tests/test_dpo_loop.py casts them in headless "
            "Chromium and runs this export (the workspace's prefs.jsonl stands in for its output here)"
        ),
        "lmforge serve --human-eval round2.sqlite --run judge=runs/judge": SERVER,
        "lmforge eval judge --answers answers/sft-dpo.jsonl --answers-b answers/sft.jsonl --judge-url "
        "http://127.0.0.1:8000/v1 --judge-model judge --output judge/": (
            "needs the judge server above; tests/test_dpo_loop.py runs it against lmforge serve on loopback"
        ),
        "lmforge import --hf path/to/SmolLM-135M --out runs/smollm": (
            "needs a downloaded Hugging Face model (network); tests/test_export_import.py imports "
            "generated ones"
        ),
        "lmforge train --config my.yaml train.init_from=hf:path/to/SmolLM-135M": (
            "the downloaded model above (network)"
        ),
        "lmforge eval --run runs/x --include-path my_tasks/ --tasks winogrande,piqa,my_group "
        "--num-fewshot 5": (
            "lm-eval task YAMLs whose datasets come from the Hugging Face hub (network); "
            "tests/test_eval_lmeval_yaml.py runs --include-path on local files"
        ),
        "lmforge eval --run runs/tiny --tasks wikitext --data-dir path/to/benchmarks": (
            "needs the full benchmark files, which lmforge does not ship (`path/to` is your folder); "
            "tests/test_eval_data.py reads a folder in that layout"
        ),
        "lmforge eval --run runs/tiny --tasks arc_easy,hellaswag --hub": (
            "downloads the full sets from the hub (network); tests/test_eval_data.py reads a local mirror"
        ),
        "lm_eval --model hf --model_args pretrained=hf/tiny,dtype=float32 --tasks arc_easy,hellaswag": (
            "lm-eval downloads the datasets (network); tests/test_eval_parity.py compares with it offline"
        ),
    }.items()
}

# ---- what runs, shrunk

TINY_MODEL = [
    "model.n_layer=1",
    "model.n_embd=32",
    "model.n_head=2",
    "model.n_kv_head=2",
    "model.block_size=256",
    "tokenizer.vocab_size=300",
]  # a context long enough for the benchmarks' and templates' prompts
SHORT_TRAIN = [
    "train.max_steps=2",
    "train.seq_len=64",
    "train.warmup_steps=1",
    "train.eval_every=0",
    "train.eval_tokens=256",
    "train.ckpt_every=0",
    "train.log_every=1",
    "train.tensorboard=false",
    "train.progress=lines",
    "data.workers=1",
]
SHORT_RUN = [
    *TINY_MODEL,
    *SHORT_TRAIN,
    "data.curate=false",
    "eval.limit=2",
    "sft.max_steps=1",
    "sample.max_new_tokens=8",
]
SHORT_TUNE = ["max_steps=1", "eval_every=0", "log_every=1", "batch_size=2", "max_new_tokens=4", "seq_len=64"]
SETUP = "lmforge run --config tiny"  # what `make demo` runs: runs/tiny, trained, evaluated and fine-tuned


@dataclass
class Run:
    extra: list[str] = field(default_factory=list)  # shrinking arguments appended to the command
    replace: dict[str, str] = field(default_factory=dict)  # argument -> shrunk argument
    stdin: str = ""
    status: int = 0
    output: str | None = None  # text the command must print (stdout + stderr)
    once: tuple[str, ...] = ()  # texts it must print exactly once (under torchrun: rank 0 alone)


RUN = {
    norm(c): r
    for c, r in {
        "lmforge run --config tiny name=tiny-alibi train.max_steps=100 model.pos=alibi": Run(
            [*SHORT_RUN, "eval.enabled=false", "sft.enabled=false"]
        ),
        "lmforge train --config path/to/my_recipe.yaml train.lr=3e-4": Run(SHORT_TRAIN),
        "lmforge run train.lrr=1": Run(
            status=2, output="lmforge: error: unknown config key 'train.lrr' (did you mean 'train.lr'?)"
        ),
        "lmforge curate --input data/raw --output data/curated": Run(["--workers", "1"]),
        "lmforge curate --config fineweb --input crawl/ --output out/fineweb --workers 8": Run(
            replace={"8": "1"}
        ),
        "lmforge curate --config my_recipe.yaml --output out/mine "
        "c4.min_words_per_line=3 lang_id.min_score=0.5": Run(["--workers", "1"]),
        "lmforge curate --input data/raw --output out/tok --tokenizer tokenizer.json": Run(
            ["--workers", "1"]
        ),
        "lmforge tokenizer train --input docs.jsonl --output tokenizer.json tokenizer.vocab_size=8192": Run(
            output="warning: tokenizer.vocab_size=8,192 asked for"
        ),
        "lmforge tokenizer encode --tokenizer tokenizer.json --input docs.jsonl --output shards/": Run(),
        "lmforge plan --params 7e9": Run(),
        "lmforge plan --compute 1e23 --gpu h100 --num-gpus 512 --mfu 0.4": Run(),
        "lmforge plan --tokens 2T --json": Run(),
        "lmforge plan --params 7B --tokens 2T --gpu a100-80gb": Run(),
        "lmforge plan --config llama-1b": Run(),
        "lmforge plan --config tiny --measure-memory --precision fp32": Run(),
        "lmforge plan --params 70B --mfu-from runs/tiny": Run(),
        "lmforge plan gpus": Run(),
        "lmforge plan sweep --dry-run": Run(),
        "lmforge train --config tiny name=my-model data.corpus=my_docs.jsonl train.max_steps=2000": Run(
            [*TINY_MODEL, *SHORT_TRAIN]
        ),
        "lmforge eval --run runs/tiny --tasks arc_easy,arc_challenge,hellaswag,mmlu,truthfulqa_mc2": Run(
            ["--limit", "2"], output="subsets shipped with lmforge"
        ),
        "lmforge eval --run runs/tiny --tasks mmlu --num-fewshot 5": Run(["--limit", "2"]),
        "lmforge eval --run runs/tiny --task-file my_task.yaml": Run(["--limit", "2"]),
        "lmforge eval --run runs/tiny --text-file notes.txt": Run(),
        "lmforge eval --run runs/tiny --shards runs/tiny/data": Run(["--limit", "2"]),
        "lmforge eval --hf-model path/to/hf_model --tasks arc_easy --output out/": Run(["--limit", "2"]),
        "lmforge eval compare runs/a runs/b": Run(),
        "lmforge generate --run runs/tiny --prompt ROMEO: sample.temperature=0.8 sample.top_k=50": Run(
            ["sample.max_new_tokens=8"]
        ),
        "lmforge generate --run runs/tiny --prompt The sample.temperature=0": Run(
            ["sample.max_new_tokens=8"]
        ),
        "lmforge generate --run runs/tiny sample.top_p=0.9 sample.seed=7 'sample.stop=[\"\\n\\n\"]'": Run(
            ["sample.max_new_tokens=8"]
        ),
        "lmforge generate --run runs/tiny --prompt The sample.temperature=0 sample.compile=true": Run(
            ["sample.max_new_tokens=4"], replace={"sample.compile=true": "sample.compile=false"}
        ),
        "lmforge generate --run runs/tiny --prompt 'What is 2+3?' --prompt-template qa.yaml "
        "sample.temperature=0": Run(["sample.max_new_tokens=4"]),
        "lmforge finetune --init runs/tiny --data my_gsm8k.jsonl --out runs/tiny-gsm8k": Run(SHORT_TUNE),
        "lmforge finetune --init runs/tiny --data my_oasst.jsonl --lora oasst_paths=all "
        "lora.rank=16 lora.alpha=32 "
        "'lora.targets=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]' lr=1e-3": Run(SHORT_TUNE),
        "lmforge finetune -c my_sft.yaml epochs=2 batching=pad --strict": Run(SHORT_TUNE),
        "lmforge train --config tiny name=tiny-legal data.corpus=my_docs.jsonl train.init_from=runs/tiny "
        "train.lr=3e-4 train.warmup_steps=20 train.max_steps=300": Run(SHORT_TRAIN),
        "lmforge chat --run runs/tiny/sft": Run(["--max-tokens", "4"], stdin="Hi!\n/quit\n"),
        "lmforge chat --run runs/tiny/sft --system 'You are terse.' --temperature 0.7 --top-p 0.9 "
        "--max-tokens 200": Run(replace={"200": "4"}, stdin="Hi!\n/quit\n"),
        "lmforge eval human --models runs/base runs/sft --prompts prompts.jsonl "
        "--output human_eval.sqlite": Run(["--max-tokens", "4"]),
        "lmforge export --run runs/tiny --out hf/tiny": Run(),
        "lmforge export --run runs/tiny --out hf/tiny-bf16 --dtype bfloat16": Run(),
        "lmforge inspect --run runs/tiny 'I hit the baseball with a bat' "
        "--compare 'I hit the bat with a baseball' "
        "--json": Run(["--layers", "0"]),
        "lmforge finetune --method dpo --init runs/sft --data prefs.jsonl --out runs/sft-dpo": Run(
            SHORT_TUNE, output="held-out preference accuracy"
        ),
        "lmforge eval human --models runs/sft runs/sft-dpo --prompts prompts.jsonl "
        "--output round2.sqlite": Run(["--max-tokens", "4"]),
        "lmforge human answers --db round2.sqlite --out answers/": Run(
            output="sft-dpo: answers/sft-dpo.jsonl"
        ),
    }.items()
}
# Separate processes (torchrun), after the in-process commands.
PROCESSES = {
    norm(c): r
    for c, r in {
        "OMP_NUM_THREADS=1 torchrun --nproc_per_node 2 -m lmforge train --config tiny "
        "train.device=cpu parallel.tp=2": Run(
            [*TINY_MODEL, *SHORT_TRAIN, "name=tiny-tp", "train.threads=1"],
            once=("bits per byte:", "[lmforge] report:", "held-out loss:"),
        ),
    }.items()
}
# Order: what later commands read is made first.
FIRST = [
    norm(c)
    for c in (
        "lmforge tokenizer train --input docs.jsonl --output tokenizer.json tokenizer.vocab_size=8192",
        "lmforge export --run runs/tiny --out hf/tiny",
    )
]


def test_every_readme_command_is_run_or_listed():
    found = readme_commands(README.read_text(encoding="utf-8"))
    known = set(RUN) | set(PROCESSES) | set(NOT_RUN)
    assert not set(RUN) & set(NOT_RUN)
    missing = [c for c in found if c not in known]
    assert not missing, (
        "README commands neither run by tests/test_readme.py nor listed in its NOT_RUN with a "
        "reason:\n" + "\n".join(missing)
    )
    stale = sorted(known - set(found))
    assert not stale, "entries of tests/test_readme.py no longer in the README:\n" + "\n".join(stale)


def test_the_command_collector():
    text = textwrap.dedent("""\
        Intro:

            lmforge run --config tiny   # a comment
            $ lmforge plan gpus
            lmforge: error: output, not a command

        ```bash
        lmforge eval --run runs/a \\
            --tasks x
        FOO=1 lmforge serve --run r &
        ```

        ```
        lmforge chat with sft (output)
        ```
        """)
    assert readme_commands(text) == [
        "lmforge run --config tiny",
        "lmforge plan gpus",
        "lmforge eval --run runs/a --tasks x",
        "FOO=1 lmforge serve --run r '&'",
    ]


def test_the_plan_tables_commands_give_their_figures(capsys):
    """The cost table's `lmforge plan` arguments print the bold figure of their row."""
    from lmforge.cli import main

    rows = re.findall(
        r"^\|[^|\n]*\| `(--[^`]+)` \| ([^\n]*)\|$", README.read_text(encoding="utf-8"), re.MULTILINE
    )
    assert len(rows) >= 5
    for args, computed in rows:
        figures = re.findall(r"\*\*([^*]+)\*\*", computed)
        assert main(["plan", *shlex.split(args)]) == 0, args
        out = capsys.readouterr().out
        for figure in figures:
            for number in re.findall(r"[\d,]+(?:\.\d+)?", figure.split("(")[0]):
                assert number in out, (args, number)


# ---- the workspace the commands run in


def _jsonl(path: Path, records) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def make_workspace(root: Path) -> None:
    """The files the README's commands name, made small: documents, recipes, task and SFT data."""
    from lmforge.data.documents import embedded_corpus

    docs = [{"id": d["id"], "text": d["text"][:6000]} for d in islice(embedded_corpus(), 40)]
    _jsonl(root / "docs.jsonl", docs)
    _jsonl(root / "my_docs.jsonl", docs[:30])
    web = REPO / "lmforge" / "corpus" / "web_sample.jsonl.gz"
    with gzip.open(web, "rt", encoding="utf-8") as f:
        pages = [json.loads(line) for line in islice(f, 40)]
    _jsonl(root / "data" / "raw" / "pages.jsonl", pages)
    _jsonl(root / "crawl" / "pages.jsonl", pages[:20])
    (root / "path" / "to").mkdir(parents=True)
    (root / "path" / "to" / "my_recipe.yaml").write_text(
        "name: mine\nmodel: {n_layer: 1, n_embd: 32, n_head: 2, block_size: 64}\n"
        "tokenizer: {vocab_size: 300}\n"
        "data: {corpus: docs.jsonl}\n"
    )
    (root / "my_recipe.yaml").write_text("sources:\n  - {path: crawl/, domain: web}\n")
    (root / "notes.txt").write_text(docs[0]["text"][:2000])
    readme = README.read_text(encoding="utf-8")
    task = re.search(r"```yaml\n(task: capitals\n.*?)```", readme, re.DOTALL)
    assert task, "the README's custom-task YAML example (task: capitals) is gone"
    (root / "my_task.yaml").write_text(task.group(1))
    capitals = [
        ("France", "Paris"),
        ("Italy", "Rome"),
        ("Spain", "Madrid"),
        ("Japan", "Tokyo"),
        ("Peru", "Lima"),
    ]
    rows = [{"country": c, "options": [p, "Oslo", "Cairo"], "answer": 0} for c, p in capitals]
    _jsonl(root / "capitals.jsonl", rows[:3])
    _jsonl(root / "capitals_train.jsonl", rows[3:])
    template = re.search(r"```yaml\n(system: .*?)```", readme, re.DOTALL)
    assert template, "the README's prompt-template example (system: ...) is gone"
    (root / "qa.yaml").write_text(template.group(1))
    _jsonl(root / "train.jsonl", [{"question": f"What is {i}+{i}?", "answer": str(2 * i)} for i in range(6)])
    _jsonl(
        root / "my_gsm8k.jsonl",
        [{"question": f"What is {i}+{i}?", "answer": f"{i}+{i}={2 * i}\n#### {2 * i}"} for i in range(20)],
    )
    _jsonl(
        root / "my_oasst.jsonl",
        [
            {
                "message_tree_id": f"t{i}",
                "prompt": {
                    "message_id": f"m{i}",
                    "role": "prompter",
                    "text": f"Say {i}.",
                    "lang": "en",
                    "replies": [
                        {
                            "message_id": f"r{i}",
                            "role": "assistant",
                            "text": f"{i}.",
                            "lang": "en",
                            "rank": 0,
                            "replies": [],
                        }
                    ],
                },
            }
            for i in range(20)
        ],
    )
    (root / "my_sft.yaml").write_text("init: runs/tiny\ndata: my_gsm8k.jsonl\nout: runs/tiny-mine\n")
    _jsonl(root / "prompts.jsonl", [{"prompt": "Hello"}, {"prompt": "What is 2+3?"}])
    _jsonl(
        root / "prefs.jsonl",
        [
            {
                "prompt": [{"role": "user", "content": f"What is {i}+{i}?"}],  # as human export
                "chosen": [{"role": "assistant", "content": str(2 * i)}],
                "rejected": [{"role": "assistant", "content": f"{i}{i}"}],
                "preference": "chosen",
                "vote_id": i + 1,
            }
            for i in range(1, 9)
        ],
    )


def prepare_copies(root: Path) -> None:
    """Runs the README names beside runs/tiny: two to compare, a base and a fine-tuned model."""
    copies = [(root / "runs" / "tiny", root / "runs" / name) for name in ("a", "b", "base")]
    copies += [
        (root / "runs" / "tiny" / "sft", root / "runs" / "sft"),
        (root / "hf" / "tiny", root / "path" / "to" / "hf_model"),
    ]
    for source, target in copies:
        if source.is_dir():  # else the command that makes it failed, and says so itself
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("sft"))


RUNNER = textwrap.dedent("""
    import contextlib, io, json, os, sys, time, traceback
    from pathlib import Path


    def run_jobs(jobs_file, results_file):
        from lmforge.cli import main

        results = {}
        for job in json.loads(open(jobs_file).read()):
            if job.get("hook") == "copies":
                import test_readme
                test_readme.prepare_copies(Path.cwd())
                continue
            out, err = io.StringIO(), io.StringIO()
            sys.stdin = io.StringIO(job["stdin"])
            env = dict(os.environ)
            os.environ.update(job["env"])
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    status = main(job["argv"])
                except SystemExit as e:
                    status = e.code if isinstance(e.code, int) else 1
                except BaseException:
                    status = "crash"
                    traceback.print_exc()
            os.environ.clear()
            os.environ.update(env)
            results[job["command"]] = {"status": status, "output": out.getvalue() + err.getvalue(),
                                       "seconds": round(time.perf_counter() - t0, 1)}
            json.dump(results, open(results_file, "w"))


    if __name__ == "__main__":  # worker processes (spawn) import this file too
        run_jobs(sys.argv[1], sys.argv[2])
""")


def shrunk_argv(command: str, run: Run) -> tuple[dict[str, str], list[str]]:
    tokens = shlex.split(command)
    env = {}
    while tokens and ENV_ASSIGNMENT.match(tokens[0]):
        key, _, value = tokens.pop(0).partition("=")
        env[key] = value
    tokens = [run.replace.get(t, t) for t in tokens]
    # after the command's own key=value overrides (argparse takes one run of them), else at the end
    last = max(
        (i for i, t in enumerate(tokens) if "=" in t and not t.startswith("-")), default=len(tokens) - 1
    )
    return env, tokens[: last + 1] + run.extra + tokens[last + 1 :]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("readme")
    make_workspace(root)
    order = FIRST + [c for c in RUN if c not in FIRST]
    jobs = [{"command": SETUP, "argv": shlex.split(SETUP)[1:] + SHORT_RUN, "env": {}, "stdin": ""}]
    for command in order:
        env, argv = shrunk_argv(command, RUN[command])
        assert argv[0] == "lmforge"
        jobs.append({"command": command, "argv": argv[1:], "env": env, "stdin": RUN[command].stdin})
        if command == FIRST[-1]:
            jobs.append({"hook": "copies"})
    (root / "jobs.json").write_text(json.dumps(jobs))
    (root / "runner.py").write_text(RUNNER)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
        "OMP_NUM_THREADS": "1",
        "LMFORGE_EVAL_DATA": os.environ.get("LMFORGE_EVAL_DATA", ""),
    }
    proc = subprocess.run(
        [sys.executable, "runner.py", "jobs.json", "results.json"],
        check=False,
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    found = json.loads((root / "results.json").read_text()) if (root / "results.json").exists() else {}
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert found.pop(SETUP)["status"] == 0, "the demo run (runs/tiny) failed; every other command needs it"
    for command, run in PROCESSES.items():
        penv, argv = shrunk_argv(command, run)
        assert argv[0] == "torchrun"
        argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", *argv[1:]]
        p = subprocess.run(
            argv, check=False, cwd=root, env={**env, **penv}, capture_output=True, text=True, timeout=600
        )
        found[command] = {"status": p.returncode, "output": p.stdout + p.stderr}
    return found


@pytest.mark.slow
@pytest.mark.parametrize("command", list(RUN) + list(PROCESSES))
def test_readme_command_works(command, results):
    run = {**RUN, **PROCESSES}[command]
    got = results[command]
    assert got["status"] == run.status, got["output"][-3000:]
    if run.output:
        assert run.output in got["output"], got["output"][-3000:]
    assert "Traceback" not in got["output"], got["output"][-3000:]
    for text in run.once:
        assert got["output"].count(text) == 1, (text, got["output"][-3000:])
