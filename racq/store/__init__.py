"""The annotation store: SQLite (WAL), numbered migrations, append-only votes, sampler, lineage, exports.

    from racq.store import open_db, add_annotator, next_item, record_vote
    db = open_db("annotations/racq.db")     # a handle (path + settings); every call opens its own connection
    add_annotator(db, "ana")
    show = next_item(db, "ana")             # None when ana has seen everything
    record_vote(db, uuid4().hex, "ana", show.item_id, show.left_id, show.right_id, "left")

Every function takes the handle first and raises StoreError with a readable message; a failed write
leaves nothing behind. All of racq's SQL lives in these modules: errors (StoreError), db (handle,
transactions), migrations, pool (annotators, queries, candidates, items, sampler), votes (votes, reveals,
undo + withdraw, preference pairs), rounds (training lineage), leases (one job at a time across
processes), scores, export (vote files; the snapshot racq.annotation.prefs builds TRL preference rows from).
"""

from racq.store.db import Store, open_db
from racq.store.errors import StoreError
from racq.store.export import prefs_snapshot, votes_snapshot
from racq.store.migrations import MIGRATIONS, applied, migrate
from racq.store.candidates import (Showing, add_annotator, add_candidate, add_query_with_passages, candidate_texts,
                             candidates_for, first_query_ids, get_annotator, get_query, is_pool_query,
                             latest_query_ids, list_annotators, make_items, next_item, progress, query_row,
                             stage_of_candidate)
from racq.store.leases import LeaseHeld, acquire_lease, get_lease, held_lease, release_lease, renew_lease
from racq.store.rounds import (ROUND_LEASE, fail_stale_rounds, finish_round, get_round, link_round_votes,
                               list_rounds, record_round, round_exists, rounds_of_vote, used_vote_ids,
                               votes_of_round)
from racq.store.votes import (PREFERENCE_OUTCOMES, VOTE_OUTCOMES, WITHDRAWN, all_votes, effective_votes,
                              preference_pairs, record_vote, undo_last, votes_for_annotator)

__all__ = [
    "Store", "StoreError", "open_db", "MIGRATIONS", "applied", "migrate",
    "Showing", "add_annotator", "get_annotator", "list_annotators", "add_query_with_passages", "get_query",
    "add_candidate", "stage_of_candidate", "make_items", "is_pool_query", "next_item", "progress",
    "query_row", "first_query_ids", "latest_query_ids", "candidates_for", "candidate_texts",
    "VOTE_OUTCOMES", "PREFERENCE_OUTCOMES", "WITHDRAWN", "record_vote", "undo_last", "all_votes", "effective_votes",
    "votes_for_annotator", "preference_pairs",
    "record_round", "finish_round", "link_round_votes", "get_round", "list_rounds", "votes_of_round",
    "rounds_of_vote", "fail_stale_rounds", "round_exists", "used_vote_ids", "ROUND_LEASE",
    "LeaseHeld", "acquire_lease", "renew_lease", "release_lease", "held_lease", "get_lease",
    "prefs_snapshot", "votes_snapshot",
]
