"""Bring your own base model: `racq models add PATH --name NAME [--force]`, a name -> folder record in
the models cache, resolved wherever a base model is taken (tiny random model, no download).

    PYTHONPATH=$PWD .venv/bin/pytest -q tests/test_models_add.py
"""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

import racq.models as models
from racq.cli import app
from racq.models import ModelMissing, add_model, check_model_dir, check_model_folder, registered_models


@pytest.fixture
def registry(tmp_path, monkeypatch):
    path = tmp_path / "cache" / "models" / "registered.json"
    monkeypatch.setattr(models, "REGISTRY_FILE", path)  # read at call time by the library and the CLI
    return path


def _invoke(*args):
    return CliRunner().invoke(app, list(args))


def test_add_records_the_folder_and_the_name_loads_everywhere(tmp_path, registry, tiny_lm):
    folder = tmp_path / "my-model"
    shutil.copytree(tiny_lm, folder)
    res = _invoke("models", "add", str(folder), "--name", "mymodel")
    assert res.exit_code == 0, res.output
    assert "model 'mymodel' registered" in res.output and "--base-model mymodel" in res.output
    record = json.loads(registry.read_text())["mymodel"]
    assert record["path"] == str(folder.resolve()) and record["model_type"] == "llama"
    assert record["architectures"] == ["LlamaForCausalLM"] and record["added"]
    assert check_model_dir("mymodel") == folder.resolve()  # what load_base, eval and training call

    from racq.generate import StageModel

    sm = StageModel.load("mymodel", tmp_path / "no-adapters")  # the name as --base-model / base_model passes it
    assert sm.stages == ["base"]
    listed = _invoke("models", "list")
    assert listed.exit_code == 0 and "mymodel" in listed.output and str(folder.resolve()) in listed.output
    # a folder path always wins over a name; the default name is the folder's name
    assert models.resolve_model(str(folder)) == folder
    assert _invoke("models", "add", str(folder)).exit_code == 0 and "my-model" in registered_models()


def test_a_missing_folder_is_refused(tmp_path, registry):
    res = _invoke("models", "add", str(tmp_path / "nope"), "--name", "x")
    assert res.exit_code == 1 and f"{tmp_path / 'nope'}: no such folder" in res.output
    assert not registry.exists()


def test_a_folder_without_config_or_tokenizer_or_weights_is_refused(tmp_path, registry, tiny_lm):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "model.safetensors").write_bytes(b"")
    res = _invoke("models", "add", str(bare), "--name", "x")
    assert res.exit_code == 1 and "no config.json in it" in res.output
    no_tok = tmp_path / "no-tok"
    shutil.copytree(tiny_lm, no_tok, ignore=shutil.ignore_patterns("tokenizer*", "special_tokens*", "chat_template*"))
    with pytest.raises(ModelMissing, match="no tokenizer files"):
        check_model_folder(no_tok)
    no_weights = tmp_path / "no-weights"
    shutil.copytree(tiny_lm, no_weights, ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(ModelMissing, match="no weight files"):
        check_model_folder(no_weights)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_lm, broken)
    (broken / "config.json").write_text('{"model_type": "vit"}')  # an image model
    with pytest.raises(ModelMissing, match="not a causal LM"):
        check_model_folder(broken)
    assert not registry.exists()


def test_a_taken_name_needs_force(tmp_path, registry, tiny_lm):
    other = tmp_path / "other"
    shutil.copytree(tiny_lm, other)
    add_model(tiny_lm, "mymodel")
    res = _invoke("models", "add", str(other), "--name", "mymodel")
    assert res.exit_code == 1 and "already registered" in res.output and "--force" in res.output
    assert registered_models()["mymodel"]["path"] == str(tiny_lm.resolve())  # unchanged
    res = _invoke("models", "add", str(other), "--name", "mymodel", "--force")
    assert res.exit_code == 0, res.output
    assert registered_models()["mymodel"]["path"] == str(other.resolve())
    assert _invoke("models", "add", str(other), "--name", "../up").exit_code == 1  # a name is never a path


def test_a_name_whose_folder_went_away_says_what_to_run(tmp_path, registry, tiny_lm):
    folder = tmp_path / "gone"
    shutil.copytree(tiny_lm, folder)
    add_model(folder, "gone")
    shutil.rmtree(folder)
    with pytest.raises(ModelMissing, match=r"registered as 'gone'.*racq models add NEW_FOLDER --name gone --force"):
        check_model_dir("gone")
    with pytest.raises(ModelMissing, match=r"registered: gone"):
        check_model_dir("typo")
    assert "folder missing" in _invoke("models", "list").output
