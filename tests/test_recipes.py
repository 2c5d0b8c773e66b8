"""The GPU recipe checked without a GPU (issue #15): every shipped recipe and accelerate/DeepSpeed config
validates key by key, a typo names its file and key, and `racq train sft|dpo --dry-run` builds the 8B-LoRA
recipe's whole run on a tiny model of Llama-3.1's architecture without training or writing an adapter."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from racq.config import REPO_ROOT
from racq.train.recipes import RecipeError, check_recipe, shipped_recipes

RECIPE = REPO_ROOT / "recipes" / "llama8b-lora.yaml"
ZERO2 = REPO_ROOT / "recipes" / "accelerate" / "zero2.yaml"
MULTI = REPO_ROOT / "recipes" / "accelerate" / "multi-gpu.yaml"


def test_every_shipped_recipe_and_accelerate_config_validates():
    found = shipped_recipes()
    assert {p.name for p in found} >= {"cpu-default.yaml", "cpu-useful.yaml", "llama8b-lora.yaml", "multi-gpu.yaml",
                                       "zero2.yaml"}
    lines = [check_recipe(p) for p in found]
    assert all(line.startswith("OK ") for line in lines)
    assert any("DEEPSPEED" in line and "zero_stage 2" in line for line in lines)


def _typo(tmp_path: Path, source: Path, old: str, new: str, subdir: str = "") -> Path:
    text = source.read_text()
    assert old in text
    target = tmp_path / subdir / source.name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text.replace(old, new, 1))
    return target


@pytest.mark.parametrize("source, old, new, expected", [
    (RECIPE, "lora_r: 16", "lora_rr: 16", "unknown setting `lora_rr` (did you mean `lora_r`?)"),
    (ZERO2, "mixed_precision: bf16", "mixed_precison: bf16", "unknown key `mixed_precison` (did you mean "
                                                             "`mixed_precision`?)"),
    (MULTI, "distributed_type: MULTI_GPU", "distributed_type: MULTI_GPUU",
     "`distributed_type: MULTI_GPUU` is not one of"),
    (MULTI, "mixed_precision: bf16", "mixed_precision: bf61", "`mixed_precision: bf61` is not one of no, fp8"),
    (ZERO2, "  zero_stage: 2", "  zero_stge: 2", "unknown key `deepspeed_config.zero_stge` (did you mean "
                                                 "`zero_stage`?)"),
    (ZERO2, "gradient_clipping: 1.0", "gradient_clipping: lots", "`deepspeed_config.gradient_clipping`: 'lots' is "
                                                                 "not a float"),
    (MULTI, "num_processes: 8", "num_processes: eight", "`num_processes: 'eight'` must be an int"),
])
def test_a_typo_names_the_file_and_the_key(tmp_path, source, old, new, expected):
    bad = _typo(tmp_path, source, old, new, subdir="accelerate" if "accelerate" in source.parts else "")
    with pytest.raises(RecipeError) as err:
        check_recipe(bad)
    assert str(bad) in str(err.value) and expected in str(err.value), str(err.value)


def test_check_recipe_command_prints_ok_or_the_error_per_file(tmp_path):
    from racq.cli import app

    bad = _typo(tmp_path, ZERO2, "  zero_stage: 2", "  zero_stge: 2", subdir="accelerate")
    result = CliRunner().invoke(app, ["train", "check-recipe", str(RECIPE), str(ZERO2), str(bad)])
    assert result.exit_code == 1, result.output
    assert f"OK {RECIPE}" in result.output and f"OK {ZERO2}" in result.output
    assert f"error: {bad}: unknown key `deepspeed_config.zero_stge`" in result.output


def test_a_gpu_recipe_and_its_deepspeed_config_must_agree(tmp_path):
    from racq.cli import app

    recipe = _typo(tmp_path, RECIPE, "grad_accum: 4", "grad_accum: 2")
    result = CliRunner().invoke(app, ["train", "check-recipe", str(recipe), str(ZERO2), str(MULTI)])
    assert result.exit_code == 1, result.output
    assert (f"error: {recipe} with {ZERO2}: deepspeed_config.gradient_accumulation_steps 4 vs grad_accum 2"
            in result.output)
    assert f"with {MULTI}" not in result.output  # no DeepSpeed section: nothing to disagree on
    shipped = CliRunner().invoke(app, ["train", "check-recipe", *map(str, shipped_recipes())])
    assert shipped.exit_code == 0, shipped.output  # CPU recipes are not cross-checked with GPU launches


@pytest.fixture(scope="module")
def tiny_llama31(tmp_path_factory, real_tokenizer):
    """Llama-3.1-8B's architecture (LlamaConfig: GQA 4:1, llama3 RoPE, untied embeddings) at tiny sizes."""
    from racq.tiny import LLAMA31_ARCH, make_tiny_lm

    return make_tiny_lm(tmp_path_factory.mktemp("llama31") / "lm", hidden=64, tokenizer=real_tokenizer, **LLAMA31_ARCH)


def test_dry_run_builds_the_8b_recipes_run_and_writes_nothing(tiny_llama31, tmp_path):
    from racq.cli import app

    adapters, run = tmp_path / "adapters", tmp_path / "run"
    sets = [f"base_model={tiny_llama31}", f"adapters_dir={adapters}", f"run_dir={run}", "t1_limit=6", "t2_limit=2",
            "passage_tokens=16", "top_k=2", "batch_size=1"]  # small: the batch's logits (49k vocab) are the cost
    for step in ("sft", "dpo"):
        result = CliRunner().invoke(app, ["train", step, "--config", str(RECIPE), "--dry-run",
                                          *[f"--set={s}" for s in sets]])
        out = result.output
        assert result.exit_code == 0, out
        assert "LlamaForCausalLM (LlamaConfig" in out and "PeftModelForCausalLM" in out
        assert "gradient_checkpointing=True" in out and "model.is_activation_checkpointing=True" in out
        assert "effective batch: 4 = 1 per device x 4 accumulation x 1 processes" in out  # the recipe's grad_accum 4
        assert "bf16: used on a GPU" in out and "bf16 True -> False" in out  # the recipe's flag, honestly reported
        assert "first batch: input_ids (" in out and "0 on frozen ones" in out
        assert "targets down_proj, gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj" in out
    assert "2 stand-ins from split t2" in out  # no pairs sampled yet: t2_limit of them
    assert not adapters.exists() and not run.exists()  # no adapter, no checkpoint, not even the run folder


def test_dry_run_of_a_typod_recipe_fails_with_the_file_and_key(tiny_llama31, tmp_path):
    from racq.cli import app

    bad = _typo(tmp_path, RECIPE, "lora_r: 16", "lora_rr: 16")
    result = CliRunner().invoke(app, ["train", "sft", "--config", str(bad), "--dry-run",
                                      f"--set=base_model={tiny_llama31}"])
    assert result.exit_code == 1
    assert f"{bad} (TrainConfig): unknown setting `lora_rr` (did you mean `lora_r`?)" in result.output
