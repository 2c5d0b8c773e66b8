"""The generic data format (docs/data-format.md): every malformed-row error names FILE:LINE and what is
wrong, the split follows the shipped rule, inline passages and ids into a named index give the same
Example, and `racq train all --data` / `racq eval --data` run end to end on a tiny random model.

    PYTHONPATH=$PWD .venv/bin/pytest -q tests/test_data_format.py      # ~3 min (tiny training + eval)
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from racq.data import DataError, Passage, load_examples, query_topic, split_of
from racq.data.generic import load_data_file
from racq.retrieval import Index, RetrievalConfig
from racq.tiny import BagOfWords

OWN = Path(__file__).parent / "data" / "own_data.jsonl"
ROUTER = Passage("Zorblax router", "To reset the Zorblax router, hold the red button on its back for ten seconds.")
KETTLE = Passage("Quillfeather kettle", "The Quillfeather kettle boils a full litre of water in ninety seconds.")
OK = {"query": "how do I reset it", "question": "The router or the kettle?",
      "passages": [{"title": ROUTER.title, "text": ROUTER.text}]}


def _jsonl(path: Path, *rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def _error(path: Path, index=None) -> str:
    with pytest.raises(DataError) as e:
        load_data_file(path, index)
    return str(e.value)


@pytest.fixture(scope="module")
def bow_index():
    """A loaded in-memory index over the two passages (ids are their content hashes)."""
    return Index.build([ROUTER, KETTLE], BagOfWords(), RetrievalConfig(), log=lambda m: None)


# ---------------------------------------------------------------- the checked-in file
def test_checked_in_file_reads_every_form_of_row():
    exs = load_data_file(OWN)
    assert len(exs) == 14 and len({e.query for e in exs}) == 14
    first = exs[0]
    assert first.passages[0] == ROUTER  # an object {title, text}
    assert exs[1].passages[0] == KETTLE  # a string "Title\nText"
    plain = exs[4].passages[0]           # a plain string: no title
    assert plain.title == "" and plain.text.startswith("Descale the Quillfeather kettle")
    assert first.extra["interpretations"][0] == {"question": "How do I restart the router?",
                                                 "answers": ["hold the red button for ten seconds"]}
    assert first.extra["id"] == "own-1" and first.extra["where"] == f"{OWN}:1"
    assert {e.dataset for e in exs} == {"custom", "gadgets"} and first.dataset == "custom"
    assert {e.split for e in exs} == {"test", "t1", "t2"}


def test_split_is_the_shipped_rule_and_a_shared_query_lands_in_the_same_split(tmp_path):
    for e in load_data_file(OWN):
        assert e.topic_id == query_topic(e.query) and e.split == split_of(query_topic(e.query))
    shipped = load_examples(["paqa"])[:30]
    rows = [{**OK, "query": "  " + e.query.upper() + "  "} for e in shipped]  # case and spaces do not matter
    mine = load_data_file(_jsonl(tmp_path / "d.jsonl", *rows))
    assert [(m.topic_id, m.split) for m in mine] == [(e.topic_id, e.split) for e in shipped]
    # an explicit topic is the split key: rows that share it share a split, whatever their queries
    grouped = load_data_file(_jsonl(tmp_path / "t.jsonl", *({**OK, "query": f"q{i}", "topic": "router"}
                                                           for i in range(20))))
    assert {e.topic_id for e in grouped} == {"router"} and {e.split for e in grouped} == {split_of("router")}


def test_gzip_and_parquet_give_the_same_examples(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    exs = load_data_file(OWN)
    gz = tmp_path / "own.jsonl.gz"
    gz.write_bytes(gzip.compress(OWN.read_bytes()))
    assert load_data_file(gz) == exs
    rows = [json.loads(line) for line in OWN.read_text().splitlines()]
    objects = [r for r in rows if isinstance(r["passages"][0], dict)]  # a Parquet column has one type
    columns = list(dict.fromkeys(k for r in objects for k in r))  # from_pylist takes the first row's keys
    path = tmp_path / "own.parquet"
    pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in columns} for r in objects]), path)
    assert load_data_file(path) == [e for e, r in zip(exs, rows) if r in objects]


def test_inline_passages_and_ids_into_a_named_index_give_the_same_example(tmp_path, monkeypatch):
    """The index is built by the real CLI from a corpus file; the ids are its passages' pids."""
    from racq.cli import app
    from racq.retrieval import named_loader

    monkeypatch.setenv("RACQ_INDEX_ROOT", str(tmp_path / "indexes"))
    corpus = _jsonl(tmp_path / "corpus.jsonl", *({"title": p.title, "text": p.text} for p in (ROUTER, KETTLE)))
    res = CliRunner().invoke(app, ["index", "build", "--passages", str(corpus), "--name", "own"])
    assert res.exit_code == 0, res.output
    pids = [json.loads(line)["pid"] for line in (tmp_path / "indexes" / "own" / "passages.jsonl").open()]
    assert pids == [ROUTER.pid, KETTLE.pid]
    inline = _jsonl(tmp_path / "inline.jsonl", {**OK, "passages": [f"{ROUTER.title}\n{ROUTER.text}",
                                                                   {"title": KETTLE.title, "text": KETTLE.text}]})
    ids = _jsonl(tmp_path / "ids.jsonl", {**{k: v for k, v in OK.items() if k != "passages"},
                                          "passage_ids": [ROUTER.pid, KETTLE.pid]})
    # racq.data never imports the retrieval code: a named index comes as its loader
    assert load_data_file(ids, named_loader("own")) == load_data_file(inline)
    res = CliRunner().invoke(app, ["data", "stats", "--data", str(ids), "--index", "own"])
    assert res.exit_code == 0 and "custom" in res.output, res.output
    res = CliRunner().invoke(app, ["data", "stats", "--data", str(ids), "--index", "other"])
    assert res.exit_code == 1 and "no index named 'other'" in res.output and "Traceback" not in res.output


# ---------------------------------------------------------------- every malformed row, named by file:line
BAD_ROWS = [
    ("{oops", "not valid JSON (Expecting property name enclosed in double quotes at column 2)"),
    ("[1, 2]", "expected a JSON object, got list"),
    ({k: v for k, v in OK.items() if k != "query"}, "missing 'query'"),
    ({**OK, "query": "   "}, "'query' is empty"),
    ({**OK, "query": 5}, "'query' is int, not text"),
    ({k: v for k, v in OK.items() if k != "question"}, "missing 'question'"),
    ({**OK, "question": ["a?"]}, "'question' is list, not text"),
    ({**OK, "qurey": "typo"}, "unknown field(s) 'qurey'; the fields are query, question, passages, passage_ids, interpretations, "
                               "topic, id, dataset"),
    ({**OK, "passages": "one string"}, "'passages' is str, not a list"),
    ({**OK, "passages": []}, "'passages' is an empty list"),
    ({**OK, "passages": [5]}, "passage 1 is int: give a string or an object {title, text}"),
    ({**OK, "passages": ["ok", {"title": "T", "body": "x"}]}, "passage 2: unknown field(s) 'body' (a passage object has title and text)"),
    ({**OK, "passages": [{"title": "T"}]}, "passage 1: missing 'text'"),
    ({**OK, "passages": [{"title": 3, "text": "x"}]}, "passage 1: 'title' is int, not text"),
    ({**OK, "passages": ["Title\nText", {"title": "T", "text": "  "}]}, "passage 2 has no text"),
    ({**OK, "passage_ids": ["x"]}, "give the passages inline ('passages') or as ids into a named index "
                                   "('passage_ids'), not both"),
    ({k: v for k, v in OK.items() if k != "passages"}, "give the passages inline ('passages') or as ids into a "
                                                       "named index ('passage_ids'), one of the two"),
    ({**{k: v for k, v in OK.items() if k != "passages"}, "passage_ids": [ROUTER.pid, 7]},
     "'passage_ids' holds int 7: ids are strings"),
    ({**OK, "interpretations": {"question": "x"}}, "'interpretations' is dict, not a list"),
    ({**OK, "interpretations": [{"answers": ["a"]}]}, "interpretation 1: missing 'question'"),
    ({**OK, "interpretations": [{"question": "Q?", "answers": "a"}]}, "interpretation 1: 'answers' must be a list of strings"),
    ({**OK, "interpretations": [{"question": "Q?", "why": 1}]}, "interpretation 1: unknown field(s) 'why'"),
    ({**OK, "topic": True}, "'topic' is bool, not text or a whole number"),
    ({**OK, "id": ""}, "'id' is empty"),
    ({**OK, "dataset": 3}, "'dataset' is int, not text"),
]


@pytest.mark.parametrize("row,message", BAD_ROWS, ids=[m.split(":")[0][:40] for _, m in BAD_ROWS])
def test_malformed_row_is_named_by_file_and_line(tmp_path, bow_index, row, message):
    path = _jsonl(tmp_path / "d.jsonl", OK, "", row)  # the bad row is on line 3 (blank lines count)
    assert _error(path, bow_index) == f"{path}:3: {message}"


def test_unknown_id_and_ids_without_an_index(tmp_path, bow_index):
    row = {**{k: v for k, v in OK.items() if k != "passages"}, "passage_ids": [KETTLE.pid, "nope"]}
    path = _jsonl(tmp_path / "d.jsonl", row)
    assert _error(path, bow_index) == (f"{path}:1: passage id(s) 'nope' not in the index (2 passages; the ids "
                                       f"are the 'pid' values of its passages.jsonl)")
    assert _error(path) == (f"{path}:1: 'passage_ids' point into a named index: give it with --index NAME "
                            f"(`racq index list`)")


def test_duplicate_id_names_both_lines(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", {**OK, "id": 7}, {**OK, "id": "7"})
    assert _error(path) == f"{path}:2: id '7' is already used at {path}:1"


def test_empty_missing_wrong_extension_and_broken_files(tmp_path):
    empty = _jsonl(tmp_path / "e.jsonl", "", "   ")
    assert _error(empty) == f"{empty}: no rows: the file is empty"
    assert _error(tmp_path / "none.jsonl") == f"{tmp_path / 'none.jsonl'}: no such file"
    csv = tmp_path / "d.csv"
    csv.write_text("query,question\n")
    assert _error(csv) == f"{csv}: unknown extension: use .jsonl, .jsonl.gz, .parquet"
    bad_pq = tmp_path / "d.parquet"
    bad_pq.write_bytes(b"PAR1 not really")
    assert _error(bad_pq).startswith(f"{bad_pq}: is not a readable Parquet file (")
    gz = tmp_path / "d.jsonl.gz"
    gz.write_bytes(gzip.compress(((json.dumps(OK) + "\n") * 200).encode())[:-30])
    assert _error(gz).startswith(f"{gz}: is truncated or not a valid gzip file")
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(json.dumps(OK).encode() + b"\n\xff\xfe\n")
    assert "is not UTF-8 text" in _error(latin)


def test_parquet_errors_name_the_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([OK, {**OK, "question": None}]), path)  # a null is a missing field
    assert _error(path) == f"{path}: row 2: missing 'question'"
    pq.write_table(pa.Table.from_pylist([{**OK, "qurey": "x"}]), path)
    assert _error(path).startswith(f"{path}: row 1: unknown field(s) 'qurey'")
    pq.write_table(pa.Table.from_pylist([OK]).slice(0, 0), path)
    assert _error(path) == f"{path}: no rows: the file is empty"


def test_cli_prints_one_line_and_no_traceback(tmp_path):
    from racq.cli import app

    path = _jsonl(tmp_path / "d.jsonl", OK, {**OK, "qurey": "x"})
    out = tmp_path / "out"
    run = [f"--set=run_dir={out / 'run'}", f"--set=adapters_dir={out / 'adapters'}"]
    for args in (["data", "stats", "--data", str(path)], ["train", "sft", "--data", str(path), *run],
                 ["train", "all", "--data", str(path), *run], ["pairs", "--data", str(path), *run],
                 ["eval", "--data", str(path), "--stages", "base", f"--set=results_dir={out}",
                  f"--set=cache_dir={out}"]):
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 1, (args, res.output)
        assert f"{path}:2: unknown field(s) 'qurey'" in res.output and "Traceback" not in res.output, args
    assert not out.exists()  # a bad file writes nothing, not even the run folder's data record


# ---------------------------------------------------------------- the real CLI on a tiny model
TINY = {"t1_limit": 0, "t2_limit": 0, "eval_examples": 2, "max_steps": 1, "batch_size": 2, "tries": 2,
        "max_new_tokens": 6, "gen_batch_size": 4, "chosen": "gold", "passage_tokens": 24, "warmup_steps": 0,
        "save_steps": 1}


def _racq(*args, timeout=600) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "racq.cli", *args], capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def trained(tiny_lm, tmp_path_factory):
    """`racq train all --data tests/data/own_data.jsonl` on the tiny model, one step per stage."""
    root = tmp_path_factory.mktemp("own-train")
    sets = {**TINY, "base_model": tiny_lm, "adapters_dir": root / "adapters", "run_dir": root / "run"}
    out = _racq("train", "all", "--data", str(OWN), *(f"--set={k}={v}" for k, v in sets.items()))
    return root, out


def test_train_all_on_own_data_writes_adapters_that_load(trained, tiny_lm):
    from racq.generate import StageModel
    from racq.train.common import data_hash, select_examples
    from racq.train.pipeline import read_state

    root, out = trained
    state = json.loads((root / "run" / "state.json").read_text())
    assert list(state["finished"]) == ["sft", "uncond", "pairs", "dpo"], out.stdout
    cfg_now = json.loads((root / "adapters" / "sft" / "manifest.json").read_text())
    assert cfg_now["data"] == str(OWN) and cfg_now["config"]["data"] == str(OWN)
    from racq.config import TrainConfig, load_config

    cfg = load_config(TrainConfig, None, {"data": str(OWN), "run_dir": str(root / "run")})
    t1 = select_examples(cfg, "t1")
    assert cfg_now["data_hash"] == data_hash(t1) and len(t1) == 6  # all six t1 rows, none of another split
    assert state["finished"]["pairs"]["examples"] == 5  # the file's five t2 rows
    assert read_state(cfg)["finished"].keys() == state["finished"].keys()
    sm = StageModel.load(str(tiny_lm), str(root / "adapters"), stages=["sft", "uncond", "aligned"],
                         include_hidden=True)
    assert {"sft", "uncond", "aligned"} <= set(sm.stages), sm.errors
    q = sm.generate([sm.passage_prompt("how do I reset the zorblax router", [ROUTER])], ["aligned"])
    assert len(q) == 1 and isinstance(q[0], str)


def test_dpo_with_data_from_a_recipe_file_takes_the_pairs_of_its_t2_split(trained, tiny_lm):
    """`data` set in a YAML recipe works as --data does: dpo resumes the run's pairs (all five t2 rows
    are done, nothing is sampled again) and trains a new stage on them."""
    import yaml

    root, _ = trained
    recipe = root / "own.yaml"
    recipe.write_text(yaml.safe_dump({**TINY, "data": str(OWN), "base_model": str(tiny_lm),
                                      "adapters_dir": str(root / "adapters"), "run_dir": str(root / "run")}))
    pairs_before = (root / "run" / "pairs.jsonl").read_text()
    out = _racq("train", "dpo", "--config", str(recipe), "--name", "aligned-own")
    assert '"resumed": 5' in out.stdout and (root / "run" / "pairs.jsonl").read_text() == pairs_before
    manifest = json.loads((root / "adapters" / "aligned-own" / "manifest.json").read_text())
    assert manifest["config"]["data"] == str(OWN) and manifest["n_pairs"] >= 1


def test_a_run_folder_is_never_resumed_on_other_data(trained, tmp_path):
    from racq.config import TrainConfig, load_config
    from racq.train.common import RunDataError, check_run_data
    from racq.train.pipeline import train_all

    root, _ = trained
    shipped = load_config(TrainConfig, None, {"run_dir": str(root / "run")})
    with pytest.raises(RunDataError, match=r"holds a run on data .*own_data.jsonl, not on the shipped datasets"):
        train_all(shipped, log=lambda *_: None)
    # a folder from before the record existed was made from the shipped datasets
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "state.json").write_text('{"finished": {}}')
    with pytest.raises(RunDataError, match="holds a run on the shipped datasets, not on data"):
        check_run_data(load_config(TrainConfig, None, {"run_dir": str(legacy), "data": str(OWN)}))
    check_run_data(load_config(TrainConfig, None, {"run_dir": str(legacy)}))  # the same data: fine


def test_eval_on_own_data_writes_metrics_per_dataset_label(trained, tiny_lm, tmp_path):
    root, _ = trained
    out = _racq("eval", "--data", str(OWN), "--split", "all", "--limit", "0", "--stages", "base,sft,aligned",
                "--base-model", str(tiny_lm), "--adapters-dir", str(root / "adapters"), "--run", "own",
                f"--set=results_dir={tmp_path / 'results'}", f"--set=cache_dir={tmp_path / 'cache'}",
                "--set=n_boot=50", "--set=calibration=false", "--set=max_new_tokens=6")
    metrics = json.loads((tmp_path / "results" / "own" / "metrics.json").read_text())
    assert set(metrics["results"]) == {"custom", "gadgets"}
    for res in metrics["results"].values():
        assert {"gold", "base", "sft", "aligned"} <= set(res)
        assert 0.0 <= res["aligned"]["grounded"]["mean"] <= 1.0
    rows = [json.loads(line) for line in (tmp_path / "results" / "own" / "per_example.jsonl").open()]
    assert len({r["query"] for r in rows}) == 14  # --split all: every row of the file
    assert "custom" in out.stdout and "gadgets" in out.stdout
