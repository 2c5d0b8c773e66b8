"""What the racq.store tests share: a pool of queries with one distinct candidate per stage, a vote on
the next item, the stage pair of an item, and a fresh store on a real SQLite file."""

import random
import uuid

from racq.data import Passage
from racq.store import (add_annotator, add_candidate, add_query_with_passages, make_items, next_item, open_db,
                        record_vote, stage_of_candidate)


def build_pool(db, n_queries=4, stages=("base", "sft", "aligned")):
    """n_queries queries with two passages each and one distinct candidate per stage; items made."""
    for q in range(n_queries):
        ps = [Passage(f"Title {q}", f"Passage one about topic {q}."), Passage("Other", f"Second passage {q}.")]
        qid = add_query_with_passages(db, f"query {q}", ps, [0.9, 0.4], dataset="paqa", topic_id=str(q))
        for s in stages:
            add_candidate(db, qid, s, f"Which {s} meaning of topic {q}?", decoding={"do_sample": False})
    make_items(db)


def vote_next(db, who, outcome="left", rng=None, **kw):
    show = next_item(db, who, rng=rng or random.Random(0), **kw)
    assert show is not None
    vid = record_vote(db, uuid.uuid4().hex, who, show.item_id, show.left_id, show.right_id, outcome)
    return show, vid


def pair_of(db, item_id):
    with db.read() as c:
        r = next(c.query("SELECT cand_a, cand_b FROM items WHERE id = ?", [item_id]))
    return tuple(sorted((stage_of_candidate(db, r["cand_a"]), stage_of_candidate(db, r["cand_b"]))))



def fresh_store(tmp_path):
    """A store in a folder that does not exist yet, with annotators "ana" and "ben"."""
    store = open_db(tmp_path / "nested" / "racq.db")
    add_annotator(store, "ana")
    add_annotator(store, "ben")
    return store
