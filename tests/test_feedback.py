"""Human-feedback rounds: usable pairs, `racq train dpo --from-votes` end to end on a tiny model (new
stage, lineage both ways), failures recorded, synthetic mixing, the export loading in TRL's DPOTrainer,
and the Feedback screen's job runner.

    HF_HUB_OFFLINE=1 .venv/bin/pytest tests/test_feedback.py -q
"""

from __future__ import annotations

import json
import shutil
import uuid

import pytest
from typer.testing import CliRunner

from racq.cli import app
from racq.data import Passage
from racq.annotation.retrain import FeedbackError, mix_synthetic, progress_callback, train_round, usable_pairs
from racq.models import list_stages, next_round_name
from racq.store import (add_annotator, add_candidate, add_query_with_passages, get_round, list_rounds, make_items,
                        open_db, record_vote, rounds_of_vote, votes_of_round)

STAGES = ("base", "sft", "aligned")


@pytest.fixture
def adapters(tmp_path, tiny_adapters):
    root = tmp_path / "adapters"
    shutil.copytree(tiny_adapters, root)
    return root


@pytest.fixture
def voted(tmp_path):
    """A database with 3 queries x 3 stages (9 items) and votes: 4 usable pairs (one agreed by two
    annotators), one conflicting item, one tie, one both_bad, one skip. Returns (db, expected vote ids)."""
    db = open_db(tmp_path / "racq.db")
    for q in range(3):
        ps = [Passage(f"Topic {q}", f"Passage about topic {q} in 19{q}0."), Passage("Other", f"More on {q}.")]
        qid = add_query_with_passages(db, f"what is topic {q}", ps, dataset="paqa", topic_id=str(q))
        for s in STAGES:
            add_candidate(db, qid, s, f"Do you mean the {s} sense of topic {q}?")
    make_items(db)
    for name in ("ana", "ben"):
        add_annotator(db, name)
    with db.read() as c:
        items = [(r["id"], r["cand_a"], r["cand_b"]) for r in c.query("SELECT * FROM items ORDER BY id")]

    def vote(who, k, outcome, swap=False):
        i, a, b = items[k]
        left, right = (b, a) if swap else (a, b)
        return record_vote(db, uuid.uuid4().hex, who, i, left, right, outcome)

    used = [vote("ana", 0, "left"), vote("ben", 0, "right", swap=True),  # same winner, other side
            vote("ana", 1, "right"), vote("ana", 2, "left"), vote("ben", 3, "left")]
    vote("ana", 4, "left"), vote("ben", 4, "right")  # conflict: item dropped
    vote("ana", 5, "tie"), vote("ana", 6, "both_bad"), vote("ben", 7, "skip")
    return db, sorted(used)


def test_usable_pairs_counts_and_exclusions(voted):
    db, _ = voted
    s = usable_pairs(db)
    assert s["pairs"] == s["new_pairs"] == 4 and s["votes"] == 10 and s["preference_votes"] == 7
    assert s["excluded"] == {"tie": 1, "both_bad": 1, "skip": 1} and s["conflicting_items"] == 1
    assert sum(s["by_stage"].values()) == 4


def test_mix_synthetic_gives_the_asked_share():
    rows = [{"i": i} for i in range(100)]
    assert mix_synthetic(30, rows, 0.0) == []
    got = mix_synthetic(30, rows, 0.25)
    assert len(got) == 10 and got == mix_synthetic(30, rows, 0.25) and len({r["i"] for r in got}) == 10
    assert len(mix_synthetic(30, rows[:5], 0.5)) == 5  # fewer exist: all of them
    with pytest.raises(FeedbackError, match=r"\[0, 1\)"):
        mix_synthetic(30, rows, 1.0)


def _cfg_args(tiny_lm, adapters, tmp_path):
    return ["--set", f"base_model={tiny_lm}", "--set", f"adapters_dir={adapters}",
            "--set", f"run_dir={tmp_path / 'run'}", "--set", "max_steps=1", "--set", "batch_size=2",
            "--set", "logging_steps=1"]


def test_train_dpo_from_votes_registers_a_new_stage_with_lineage(tmp_path, tiny_lm, adapters, voted):
    db, used = voted
    result = CliRunner().invoke(app, ["train", "dpo", "--from-votes", "--db", str(db.path),
                                      *_cfg_args(tiny_lm, adapters, tmp_path)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    stages = {s.name: s for s in list_stages(adapters)}
    assert "aligned-r1" in stages and next_round_name(adapters) == "aligned-r2"
    (rnd,) = list_rounds(db)
    manifest = stages["aligned-r1"].manifest
    assert manifest["round_id"] == rnd["id"] and manifest["start_adapter"] == "aligned"
    assert manifest["reference_adapter"] == "sft" and manifest["n_human_pairs"] == 4
    assert (rnd["stage"], rnd["base_stage"], rnd["status"]) == ("aligned-r1", "aligned", "done")
    assert rnd["metrics"]["steps"] == 1 and rnd["config"]["n_synthetic_pairs"] == 0
    assert votes_of_round(db, rnd["id"]) == used and all(rounds_of_vote(db, v) == [rnd["id"]] for v in used)
    assert usable_pairs(db)["new_pairs"] == 0
    from racq.generate import StageModel

    assert StageModel.load(tiny_lm, adapters).stages == ["base", "sft", "aligned", "aligned-r1"]


def test_a_failed_round_is_recorded_and_leaves_no_stage(tmp_path, tiny_lm, adapters, voted, monkeypatch):
    from racq.config import TrainConfig

    db, used = voted

    def boom(*a, **kw):
        raise RuntimeError("out of memory")

    monkeypatch.setattr("racq.train.dpo.train_dpo", boom)
    cfg = TrainConfig(base_model=str(tiny_lm), adapters_dir=str(adapters), run_dir=str(tmp_path / "run"))
    with pytest.raises(RuntimeError, match="out of memory"):
        train_round(cfg, db.path)
    (rnd,) = list_rounds(db)
    assert rnd["status"] == "failed" and "out of memory" in rnd["metrics"]["error"]
    assert "aligned-r1" not in {s.name for s in list_stages(adapters)}
    assert usable_pairs(db)["new_pairs"] == 4  # a failed round uses nothing up


def test_inputs_are_checked_before_a_round_is_recorded(tmp_path, tiny_lm, adapters, voted):
    from racq.config import TrainConfig

    db, _ = voted
    cfg = TrainConfig(base_model=str(tiny_lm), adapters_dir=str(adapters), run_dir=str(tmp_path / "run"))
    with pytest.raises(FeedbackError, match="racq pairs"):
        train_round(cfg, db.path, synthetic_weight=0.5)  # no pairs.jsonl in the run folder
    empty = open_db(tmp_path / "empty.db")
    with pytest.raises(FeedbackError, match="0 usable human pair"):
        train_round(cfg, empty.path)
    shutil.rmtree(adapters / "aligned")
    with pytest.raises(FeedbackError, match="'aligned' not found"):
        train_round(cfg, db.path)
    assert list_rounds(db) == [] and list_rounds(empty) == []


def test_synthetic_pairs_are_mixed_at_the_given_share(tmp_path, tiny_lm, adapters, voted, monkeypatch):
    from racq.config import TrainConfig

    db, _ = voted
    run = tmp_path / "run"
    run.mkdir()
    conv = {"prompt": [{"role": "user", "content": "q?"}], "chosen": [{"role": "assistant", "content": "a?"}],
            "rejected": [{"role": "assistant", "content": "b?"}]}
    (run / "pairs.jsonl").write_text("".join(json.dumps({**conv, "n": i}) + "\n" for i in range(20)))
    seen = {}

    def fake(cfg, files, start, reference, name, extra_manifest, callbacks):
        seen["rows"] = {f.name: len(f.read_text().splitlines()) for f in files}
        target = adapters / name
        shutil.copytree(adapters / "aligned", target)
        (target / "manifest.json").write_text(json.dumps({"metrics": {"steps": 0}, **extra_manifest}))
        return target

    monkeypatch.setattr("racq.train.dpo.train_dpo", fake)
    cfg = TrainConfig(base_model=str(tiny_lm), adapters_dir=str(adapters), run_dir=str(run))
    out = train_round(cfg, db.path, synthetic_weight=0.5)
    assert seen["rows"] == {"human.jsonl": 4, "synthetic.jsonl": 4}
    assert (out["n_human_pairs"], out["n_synthetic_pairs"], out["stage"]) == (4, 4, "aligned-r1")
    assert get_round(db, out["round_id"])["config"]["synthetic_weight"] == 0.5


def test_exported_prefs_train_one_dpo_step_in_trl(tmp_path, tiny_lm, voted):
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    db, _ = voted
    out = tmp_path / "prefs.jsonl"
    result = CliRunner().invoke(app, ["export", "prefs", str(out), "--format", "jsonl", "--db", str(db.path),
                                      "--tokenizer", str(tiny_lm)])
    assert result.exit_code == 0, result.output
    assert "4 preference pairs" in result.output
    ds = load_dataset("json", data_files=str(out), split="train")  # as a user would load it
    assert ds.num_rows == 4 and ds[0]["prompt"][0]["role"] == "system"
    tok = AutoTokenizer.from_pretrained(tiny_lm)
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=1, per_device_train_batch_size=2, use_cpu=True,
                     bf16=False, report_to=[], save_strategy="no", logging_steps=1, disable_tqdm=True)
    events = []
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_lm), args=args, train_dataset=ds,
                         processing_class=tok, peft_config=LoraConfig(r=4, target_modules="all-linear"),
                         callbacks=[progress_callback(events.append)])  # the UI's progress hook, for real
    trainer.train()
    assert trainer.state.global_step == 1
    kinds = [e["event"] for e in events]
    assert kinds[0] == "train_begin" and "step" in kinds and kinds[-1] == "train_end"
    assert any(e["event"] == "log" and e["loss"] is not None and e["max_steps"] == 1 for e in events)

    votes = tmp_path / "votes.parquet"
    result = CliRunner().invoke(app, ["export", "votes", str(votes), "--db", str(db.path)])
    assert result.exit_code == 0 and "10 votes" in result.output
    import pyarrow.parquet as pq

    assert pq.read_table(votes).num_rows == 10


def test_rate_prints_the_leaderboard(voted):
    db, _ = voted
    result = CliRunner().invoke(app, ["rate", "--db", str(db.path), "--n-boot", "50"])
    assert result.exit_code == 0, result.output
    assert "10 votes (9 games" in result.output and "Cohen's" in result.output
    assert all(s in result.output for s in STAGES)


# ------------------------------------------------------------------ the Feedback screen's runner
def _admin_context(db, tiny_lm, adapters):
    """The real AppContext over `db`, with a real (tiny) model loaded, and a request signed in as admin."""
    from types import SimpleNamespace

    from racq.generate import StageModel
    from racq.service import Asker
    from racq.ui import AppConfig, make_context

    cfg = AppConfig(db=str(db.path), base_model=str(tiny_lm), adapters_dir=str(adapters), preload=False,
                    check_index=False, score=False)
    ctx = make_context(cfg, Asker(StageModel.load(tiny_lm, adapters), index=None))
    admin = SimpleNamespace(session_hash="admin-session", username=None)
    ctx.set_user(admin, {"name": "ana", "role": "admin"})
    return ctx, admin


def test_feedback_screen_trains_in_a_worker_and_loads_the_stage(voted, tiny_lm, adapters, monkeypatch):
    from types import SimpleNamespace

    from racq.ui import feedback as screen

    db, _ = voted
    monkeypatch.setattr(screen, "POLL_S", 0.01)

    def fake_round(cfg, db_path, weight, progress):
        assert cfg.adapters_dir == str(adapters)  # the app's adapters folder, where the stage must land
        progress({"event": "message", "message": "exporting 4 human pairs"})
        progress({"event": "log", "step": 1, "max_steps": 2, "loss": 0.69})
        progress({"event": "step", "step": 2, "max_steps": 2})
        shutil.copytree(adapters / "aligned", adapters / "aligned-r1")  # what training writes
        return {"stage": "aligned-r1", "round_id": 7, "n_human_pairs": 4, "n_synthetic_pairs": 0}

    monkeypatch.setattr("racq.annotation.retrain.train_round", fake_round)
    ctx, admin = _admin_context(db, tiny_lm, adapters)
    assert "aligned-r1" not in ctx.asker().stages
    updates = list(screen.train_updates(ctx, 0.0, admin))
    bar, log, message = updates[-1]
    assert "aligned-r1" in message and "pool" in message and "Explore shows it now" in message
    assert 'value="2" max="2"' in bar and "loss 0.6900" in log and "exporting" in log
    # loaded into the model that was already in memory (same Asker), next to the other stages
    assert ctx.asker().stages == ["base", "sft", "aligned", "aligned-r1"]
    assert ctx.jobs.current().status == "done" and "4 usable human pairs" in screen.summary_md(ctx)
    # a page opened later shows the same log and result
    summary, bar2, log2, message2 = screen.screen_state(ctx, admin)
    assert (bar2, log2, message2) == (bar, log, message) and "4 usable" in summary

    nobody = SimpleNamespace(session_hash="someone-else", username=None)
    refused = list(screen.train_updates(ctx, 0.0, nobody))
    assert refused == [("", "", "Only an admin can train a round.")]
    assert "for admins" in screen.screen_state(ctx, nobody)[0] and screen.screen_state(ctx, nobody)[2] == ""

    gr = pytest.importorskip("gradio")
    with gr.Blocks() as demo:
        handle = screen.build(ctx)
    assert {"train_round", "pool_build", "feedback_summary"} <= {d.api_name for d in demo.fns.values()}
    assert "4 usable" in handle["refresh"]()[0] and len(handle["refresh_outputs"]) == 4


def test_two_apps_in_one_process_have_their_own_job_runner(tmp_path):
    """The Feedback screen's job lives on the app's context: a round in one app is not another's."""
    from racq.ui import AppConfig, make_context

    a = make_context(AppConfig(db=str(tmp_path / "a.db"), adapters_dir=str(tmp_path)))
    b = make_context(AppConfig(db=str(tmp_path / "b.db"), adapters_dir=str(tmp_path)))
    assert a.jobs is not b.jobs
