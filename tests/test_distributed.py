"""Training under a launcher: `accelerate launch` with 2 CPU processes (gloo) as real subprocesses, against
one process with the same effective batch (2 ranks x batch 2 == 1 process x batch 4).

Checked: the SFT and DPO adapters and losses match the single process within a tolerance (the Trainer
averages logged losses across ranks); rank 0 alone wrote each adapter and manifest (world_size 2,
effective batch 4), the run records and one merged pairs file; sharded pairs are byte-for-byte the file
one process writes from the same adapters; a `--from-votes` round under the launcher records one round
in the SQLite store and matches the single-process round; the adapters load in StageModel and generate.

    HF_HUB_OFFLINE=1 .venv/bin/pytest tests/test_distributed.py -q
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from apphelpers import APP_ENV, REPO
from racq.config import GenConfig, PromptConfig, TrainConfig, load_config
from racq.data import Passage
from racq.annotation.retrain import train_round
from racq.store import (add_annotator, add_candidate, add_query_with_passages, list_rounds, make_items, open_db,
                        record_vote, votes_of_round)
from racq.train.dpo import train_dpo
from racq.train.pairs import build_pairs, read_pairs, shard_path
from racq.train.sft import train_sft

RECIPE = REPO / "recipes" / "accelerate" / "cpu-2proc.yaml"  # main_process_port 0: accelerate picks a free port
SETS = {"t1_limit": 10, "t2_limit": 4, "eval_examples": 2, "max_steps": 2, "batch_size": 2, "tries": 2,
        "max_new_tokens": 6, "gen_batch_size": 2, "chosen": "gold", "passage_tokens": 24, "warmup_steps": 0,
        # equal data per optimizer step: no dropout draws (they differ per rank), no length grouping
        # (its groups depend on the per-device batch)
        "lora_dropout": 0.0, "group_by_length": False, "logging_steps": 1}
# SFT: the Trainer normalises the loss by the tokens of the whole global batch (average_tokens_across_devices),
# so 2 x 2 is 1 x 4 up to float rounding (seen: losses ~1e-6 apart, weights ~5e-8).
SFT_TOL = {"loss": 1e-4, "weight": 1e-5}
# DPO+NLL is compared with 1 process x batch 2 x grad_accum 2 instead: TRL's NLL term is a token mean within
# a (micro-)batch, so 2 ranks x 2 (DDP averages the ranks) equals 2 accumulated micro-batches of 2, while
# 1 x 4 takes the token mean over all 4 rows (seen: losses 8e-4 apart on ~6.1, and Adam's first step,
# ~lr x sign(gradient), turning that into weight changes 8-16 % apart). Weights are compared by their change
# from the start adapter, |delta2 - delta1| / |delta2| (L2), which Adam's sign-like first step keeps meaningful.
DPO_TOL = {"loss": 1e-4, "delta": 0.02}


def launch(args: list[str], log: Path) -> str:
    """Run `accelerate launch` (2 CPU processes) to its exit; return its output (stdout + stderr)."""
    env = {**os.environ, **APP_ENV, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(RECIPE), "-m", "racq.cli", *args]
    with log.open("wb") as out:  # a file, not a PIPE: two ranks' output cannot fill a pipe and block
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=400, cwd=REPO).returncode
    text = log.read_text(errors="replace")
    assert rc == 0, text[-4000:]
    return text


def sets(values: dict) -> list[str]:
    return [a for k, v in values.items() for a in ("--set", f"{k}={v}")]


def weights(adapter: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(adapter / "adapter_model.safetensors"))


def assert_same_training(two: Path, one: Path, tol: dict, start: Path | None = None,
                         keys=("train_loss_first", "train_loss_last", "train_loss_mean")):
    m2, m1 = (json.loads((p / "manifest.json").read_text()) for p in (two, one))
    assert (m2["world_size"], m2["effective_batch"]) == (2, 4) and (m1["world_size"], m1["effective_batch"]) == (1, 4)
    assert m2["metrics"]["steps"] == m1["metrics"]["steps"]
    for k in keys:
        assert abs(m2["metrics"][k] - m1["metrics"][k]) < tol["loss"], (k, m2["metrics"][k], m1["metrics"][k])
    w2, w1 = weights(two), weights(one)
    assert set(w2) == set(w1)
    if start is None:
        gap = max((w2[k] - w1[k]).abs().max().item() for k in w2)
        assert gap < tol["weight"], gap
        return
    w0 = weights(start)
    moved = sum(((w2[k] - w0[k]) ** 2).sum().item() for k in w2) ** 0.5
    apart = sum(((w2[k] - w1[k]) ** 2).sum().item() for k in w2) ** 0.5
    assert moved > 0 and apart / moved < tol["delta"], (apart, moved)


@pytest.fixture(scope="module")
def two_ranks(tiny_lm, tmp_path_factory):
    """`racq train all` (sft, uncond, sharded pairs, dpo) under the launcher, batch 2 per rank: its config
    and output."""
    root = tmp_path_factory.mktemp("two-ranks")
    values = {**SETS, "base_model": tiny_lm, "adapters_dir": root / "adapters", "run_dir": root / "run"}
    out = launch(["train", "all", *sets(values)], root / "launch.log")
    return load_config(TrainConfig, None, {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}), out


def one_rank(cfg: TrainConfig, tmp_path: Path, **kw) -> TrainConfig:
    """The single-process twin of the 2-rank run: the same effective batch of 4 (batch 4 unless kw says)."""
    return dataclasses.replace(cfg, **{"batch_size": 4, "run_dir": str(tmp_path / "run1"), **kw})


def test_rank0_alone_wrote_the_adapters_manifests_and_run_records(two_ranks):
    cfg, out = two_ranks
    adapters, run = Path(cfg.adapters_dir), Path(cfg.run_dir)
    assert sorted(p.name for p in adapters.iterdir()) == ["aligned", "sft", "uncond"]  # no .tmp-/.old- left
    for name in ("sft", "uncond", "aligned"):
        m = json.loads((adapters / name / "manifest.json").read_text())
        assert (m["world_size"], m["effective_batch"]) == (2, 4), name
    assert list(json.loads((run / "state.json").read_text())["finished"]) == ["sft", "uncond", "pairs", "dpo"]
    assert not list(run.glob("pairs.rank*")) and (run / "data-source.json").exists()
    assert out.count('"finished"') == 1  # the command's result printed once (rank 0), not once per rank


def test_sft_on_two_ranks_matches_one_process_with_the_same_effective_batch(two_ranks, tmp_path):
    cfg, _ = two_ranks
    one = one_rank(cfg, tmp_path, adapters_dir=str(tmp_path / "adapters1"))
    assert_same_training(Path(cfg.adapters_dir) / "sft", train_sft(one), SFT_TOL,
                         keys=("train_loss_first", "train_loss_last", "train_loss_mean", "eval_loss"))


def test_sharded_pairs_are_the_file_one_process_writes(two_ranks, tmp_path):
    cfg, _ = two_ranks
    one = one_rank(cfg, tmp_path)  # the same sft/uncond adapters, one process
    stats = build_pairs(one)
    two_file, one_file = Path(cfg.run_dir) / "pairs.jsonl", Path(one.run_dir) / "pairs.jsonl"
    assert stats["written"] == len(list(read_pairs(two_file))) > 0
    assert two_file.read_bytes() == one_file.read_bytes()
    assert json.loads((Path(cfg.run_dir) / "pairs.stats.json").read_text()) == stats


def test_dpo_on_two_ranks_matches_one_process(two_ranks, tmp_path):
    cfg, _ = two_ranks
    adapters = tmp_path / "adapters1"
    shutil.copytree(Path(cfg.adapters_dir) / "sft", adapters / "sft")
    pairs = Path(cfg.run_dir) / "pairs.jsonl"
    assert len(list(read_pairs(pairs))) == 4  # = the effective batch: every step trains on all rows in both runs
    one = one_rank(cfg, tmp_path, adapters_dir=str(adapters), batch_size=2, grad_accum=2)
    assert_same_training(Path(cfg.adapters_dir) / "aligned", train_dpo(one, [pairs]), DPO_TOL, start=adapters / "sft")


def make_votes(path: Path):
    """A database with 4 usable preference pairs over 3 queries x 3 stages (as tests/test_feedback.py)."""
    db = open_db(path)
    for q in range(3):
        ps = [Passage(f"Topic {q}", f"Passage about topic {q} in 19{q}0."), Passage("Other", f"More on {q}.")]
        qid = add_query_with_passages(db, f"what is topic {q}", ps, dataset="paqa", topic_id=str(q))
        for s in ("base", "sft", "aligned"):
            add_candidate(db, qid, s, f"Do you mean the {s} sense of topic {q}?")
    make_items(db)
    add_annotator(db, "ana")
    with db.read() as c:
        items = [(r["id"], r["cand_a"], r["cand_b"]) for r in c.query("SELECT * FROM items ORDER BY id")]
    for k, outcome in enumerate(("left", "right", "left", "right", "tie")):
        i, a, b = items[k]
        record_vote(db, f"vote-{k}", "ana", i, a, b, outcome)
    return db


def test_a_from_votes_round_on_two_ranks_is_recorded_once_and_matches_one_process(two_ranks, tiny_lm, tmp_path):
    from racq.generate import StageModel  # imports torch: only in the tests that need it

    cfg, _ = two_ranks
    for side in ("two", "one"):
        for name in ("sft", "aligned"):
            shutil.copytree(Path(cfg.adapters_dir) / name, tmp_path / side / "adapters" / name)
    db2, db1 = make_votes(tmp_path / "two" / "racq.db"), make_votes(tmp_path / "one" / "racq.db")
    values = {**SETS, "max_steps": 1, "base_model": tiny_lm, "adapters_dir": tmp_path / "two" / "adapters",
              "run_dir": tmp_path / "two" / "run"}
    out = launch(["train", "dpo", "--from-votes", "--db", str(db2.path), *sets(values)], tmp_path / "launch.log")
    (rnd,) = list_rounds(db2)
    assert rnd["status"] == "done" and rnd["stage"] == "aligned-r1" and len(votes_of_round(db2, rnd["id"])) == 4
    assert out.count("round 1 done") == 1 and out.count("'round_id': 1") == 1  # rank 0 reports, once
    assert [p.name for p in (tmp_path / "two" / "run" / "feedback" / "aligned-r1").iterdir()] == ["human.jsonl"]
    one = dataclasses.replace(cfg, max_steps=1, batch_size=2, grad_accum=2,
                              adapters_dir=str(tmp_path / "one" / "adapters"),
                              run_dir=str(tmp_path / "one" / "run"))
    train_round(one, db1)
    two_ad = tmp_path / "two" / "adapters" / "aligned-r1"
    assert_same_training(two_ad, tmp_path / "one" / "adapters" / "aligned-r1", DPO_TOL,
                         start=tmp_path / "one" / "adapters" / "aligned")
    assert json.loads((two_ad / "manifest.json").read_text())["round_id"] == rnd["id"]
    sm = StageModel.load(tiny_lm, tmp_path / "two" / "adapters")
    assert sm.stages == ["base", "sft", "aligned", "aligned-r1"]
    prompt = sm.passage_prompt("what is topic 1", [Passage("Topic 1", "Passage about topic 1 in 1910.")])
    texts = sm.generate([prompt] * 2, ["aligned", "aligned-r1"], GenConfig(max_new_tokens=4))
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_a_killed_sharded_pairs_run_resumes_to_the_file_one_process_writes(tiny_lm, tiny_adapters, tmp_path):
    """Shards that a killed 2-rank run left (rank 1 finished batch 1; rank 0 wrote batch 0's first pair row
    but not its marker, then a torn line) are merged first; one process then samples only what is
    missing, with the same per-batch seeds, and ends with the uninterrupted file."""
    base = {**SETS, "t2_limit": 4, "base_model": str(tiny_lm), "adapters_dir": str(tiny_adapters)}
    fresh = load_config(TrainConfig, None, {**base, "run_dir": str(tmp_path / "fresh")})
    from racq.generate import StageModel  # imports torch: only in the tests that need it

    sm = StageModel.load(tiny_lm, tiny_adapters, stages=["sft", "uncond"], include_hidden=True,
                         prompt=PromptConfig(top_k=fresh.top_k, passage_tokens=fresh.passage_tokens))  # load once
    build_pairs(fresh, stage_model=sm)
    lines = (Path(fresh.run_dir) / "pairs.jsonl").read_text().splitlines(keepends=True)
    marks = [i for i, line in enumerate(lines) if '"done"' in line]
    batch0, batch1 = lines[:marks[1] + 1], lines[marks[1] + 1:marks[3] + 1]  # gen_batch_size 2: 2 examples a batch
    killed = load_config(TrainConfig, None, {**base, "run_dir": str(tmp_path / "killed")})
    out = Path(killed.run_dir) / "pairs.jsonl"
    out.parent.mkdir(parents=True)
    shard_path(out, 1).write_text("".join(batch1))
    shard_path(out, 0).write_text(batch0[0] + '{"prompt": [{"role": "sys')
    shutil.copy(Path(fresh.run_dir) / "ranked-t2.json", out.parent)  # a cache (keyed): no second encode
    stats = build_pairs(killed, stage_model=sm)
    assert stats["resumed"] == 2 and not list(out.parent.glob("pairs.rank*"))
    assert out.read_bytes() == (Path(fresh.run_dir) / "pairs.jsonl").read_bytes()
