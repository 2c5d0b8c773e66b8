"""Sign-in hardening: the same cost for unknown names and wrong tokens, failure throttles per name and per
client address (on a fake clock, no sleeps), bounded names and tokens, and sign-in kept out of the votes'
queue slot. (tests/test_access.py drives the throttle through the real app.)

    .venv/bin/pytest -q tests/test_signin.py
"""

from __future__ import annotations

import hashlib
import statistics
import threading
import time
import uuid

import pytest

from apphelpers import Rest, serve, shown_token, synthetic_pool
from racq.ui import users as users_mod
from racq.ui.throttle import SignInGuard, Throttle
from racq.ui.users import MAX_TOKEN_CHARS, SignInError, check_sign_in, hash_token

WINDOW = 15 * 60


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def users():
    return {"ana": {"role": "admin", "token": hash_token("ana-token")},
            "bob": {"role": "annotator", "token": hash_token("bob-token")}}


@pytest.fixture
def pbkdf2_calls(monkeypatch):
    """Counts PBKDF2 runs (the expensive part of a sign-in)."""
    calls = []
    real = hashlib.pbkdf2_hmac

    def counting(*a, **kw):
        calls.append(a[0])
        return real(*a, **kw)

    monkeypatch.setattr(hashlib, "pbkdf2_hmac", counting)
    return calls


# ------------------------------------------------------------------ timing parity
def test_an_unknown_name_costs_as_much_as_a_wrong_token(users):
    def median_s(name, n=7):
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            with pytest.raises(SignInError, match="unknown name or wrong token"):
                check_sign_in(users, name, "not-the-token")
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    median_s("zed", 1)  # the dummy hash is made on first use; not part of what is compared
    real, unknown = [], []
    for _ in range(3):  # interleaved, so a burst of load on the machine hits both alike
        real.append(median_s("ana"))
        unknown.append(median_s("nobody-here"))
    ratio = statistics.median(real) / statistics.median(unknown)
    assert 0.5 < ratio < 2.0, (real, unknown)


def test_the_dummy_hash_is_made_once_in_the_real_scheme(pbkdf2_calls, users):
    users_mod._dummy_hash.cache_clear()
    for name in ("zed", "yan", "xia"):
        with pytest.raises(SignInError):
            check_sign_in(users, name, "t")
    assert len(pbkdf2_calls) == 4  # the dummy once, then one verification per attempt
    scheme, iterations, _, _ = users_mod._dummy_hash().split("$")
    assert (scheme, int(iterations)) == (users_mod.SCHEME, users_mod.ITERATIONS)


# ------------------------------------------------------------------ bounds
def test_names_and_tokens_are_bounded_before_any_hashing(pbkdf2_calls, users):
    users_mod._dummy_hash()
    pbkdf2_calls.clear()
    with pytest.raises(SignInError, match=f"tokens are at most {MAX_TOKEN_CHARS}"):
        check_sign_in(users, "ana", "x" * (MAX_TOKEN_CHARS + 1))
    with pytest.raises(SignInError, match="names are 1-64 characters"):
        check_sign_in(users, "n" * 65, "ana-token")
    with pytest.raises(SignInError, match="names are 1-64 characters"):
        check_sign_in(None, "n" * 20000)  # auth off: the same clear message
    assert pbkdf2_calls == []
    assert check_sign_in(users, " ana ", "ana-token") == "admin"  # padding is not length
    with pytest.raises(ValueError, match="1-64"):
        users_mod.add_user("/nonexistent/users.yaml", "n" * 65)


# ------------------------------------------------------------------ the throttle itself
def test_throttle_counts_failures_per_key_within_the_window():
    clock = FakeClock()
    t = Throttle(3, WINDOW, clock)
    for _ in range(2):  # failures at 0 s and 30 s
        t.fail("ana")
        clock.now += 30
    assert t.wait_s("ana") == 0.0
    t.fail("ana")  # the third, at 60 s
    assert t.wait_s("ana") == pytest.approx(WINDOW - 60)  # until the oldest failure leaves the window
    assert t.wait_s("bob") == 0.0  # keys are independent
    clock.now += WINDOW - 60 - 1
    assert t.wait_s("ana") == pytest.approx(1.0)
    clock.now += 1
    assert t.wait_s("ana") == 0.0  # the first failure expired; two remain
    t.fail("ana")
    assert t.wait_s("ana") > 0
    t.clear("ana")
    assert t.wait_s("ana") == 0.0
    off = Throttle(0, WINDOW, clock)
    for _ in range(100):
        off.fail("ana")
    assert off.wait_s("ana") == 0.0


def test_throttle_memory_is_bounded_under_a_flood_of_keys():
    clock = FakeClock()
    t = Throttle(2, WINDOW, clock, max_keys=100)
    for i in range(1000):
        t.fail(f"name-{i}")
    assert len(t._fails) <= 100
    clock.now += WINDOW + 1
    t.fail("late")
    assert t.wait_s("name-999") == 0.0


def _guard(clock, per_name=5, per_client=20):
    return SignInGuard(Throttle(per_name, WINDOW, clock), Throttle(per_client, WINDOW, clock))


def test_a_throttled_name_is_refused_without_hashing_until_the_window_passes(users, pbkdf2_calls):
    clock = FakeClock()
    guard = _guard(clock)
    for name in ("ana", "ghost"):  # a real name and an unknown one are throttled alike
        for _ in range(5):
            with pytest.raises(SignInError, match="unknown name or wrong token"):
                check_sign_in(users, name, "wrong", guard, "10.0.0.1")
    pbkdf2_calls.clear()
    for name, token in (("ana", "ana-token"), ("ghost", "x")):
        with pytest.raises(SignInError) as err:
            check_sign_in(users, name, token, guard, "10.0.0.2")
        assert str(err.value) == "too many failed sign-ins for this name: try again in 15 min"
    assert pbkdf2_calls == []  # no PBKDF2 work while throttled
    assert check_sign_in(users, "bob", "bob-token", guard, "10.0.0.2") == "annotator"  # others still sign in
    clock.now += 10 * 60
    with pytest.raises(SignInError, match="try again in 5 min"):
        check_sign_in(users, "ana", "ana-token", guard, "10.0.0.2")
    clock.now += 5 * 60
    assert check_sign_in(users, "ana", "ana-token", guard, "10.0.0.2") == "admin"


def test_a_success_clears_the_names_failures(users):
    guard = _guard(FakeClock())
    for _ in range(4):
        with pytest.raises(SignInError):
            check_sign_in(users, "ana", "wrong", guard, "10.0.0.1")
    assert check_sign_in(users, "ana", "ana-token", guard, "10.0.0.1") == "admin"
    for _ in range(4):  # the count starts again from zero
        with pytest.raises(SignInError, match="unknown name or wrong token"):
            check_sign_in(users, "ana", "wrong", guard, "10.0.0.1")
    assert check_sign_in(users, "ana", "ana-token", guard, "10.0.0.1") == "admin"


def test_one_address_trying_many_names_is_throttled(users, pbkdf2_calls):
    clock = FakeClock()
    guard = _guard(clock, per_name=5, per_client=3)
    for i in range(3):
        with pytest.raises(SignInError, match="unknown name or wrong token"):
            check_sign_in(users, f"guess-{i}", "x", guard, "10.0.0.9")
    pbkdf2_calls.clear()
    with pytest.raises(SignInError, match="from your address: try again in 15 min"):
        check_sign_in(users, "ana", "ana-token", guard, "10.0.0.9")  # even a right token, from there
    assert pbkdf2_calls == []
    assert check_sign_in(users, "ana", "ana-token", guard, "10.0.0.10") == "admin"  # another address
    with pytest.raises(SignInError, match="from your address"):  # a success elsewhere does not reset it
        check_sign_in(users, "bob", "bob-token", guard, "10.0.0.9")
    clock.now += WINDOW
    assert check_sign_in(users, "bob", "bob-token", guard, "10.0.0.9") == "annotator"


def test_throttle_settings_come_from_the_app_config():
    from racq.ui import AppConfig

    cfg = AppConfig()
    assert (cfg.signin_max_failures_per_name, cfg.signin_max_failures_per_client,
            cfg.signin_throttle_minutes) == (5, 20, 15.0)
    guard = SignInGuard.from_config(AppConfig(signin_max_failures_per_name=2, signin_throttle_minutes=1))
    assert (guard.per_name.limit, guard.per_name.window_s, guard.per_client.limit) == (2, 60.0, 20)


# ------------------------------------------------------------------ the queue
@pytest.fixture
def signin_app(tmp_path):
    from racq.store import open_db
    from racq.ui import AppConfig, build_app
    from racq.ui.users import add_user

    db = tmp_path / "racq.db"
    synthetic_pool(open_db(db), 3)
    token = add_user(tmp_path / "users.yaml", "ana")
    demo = build_app(AppConfig(db=str(db), adapters_dir=str(tmp_path), users_file=str(tmp_path / "users.yaml"),
                               preload=False, score=False))
    with serve(demo) as url:
        rest = Rest(url, timeout=60)
        yield demo, rest, token
        rest.close()


def test_sign_in_has_its_own_queue_slot(signin_app):
    demo, _, _ = signin_app
    slots = {fn.api_name: (fn.concurrency_id, fn.concurrency_limit) for fn in demo.fns.values() if fn.api_name}
    assert slots["annotate_sign_in"] == slots["annotate_sign_out"] == ("signin", 2)
    assert {slots[a] for a in ("annotate_left", "annotate_skip", "annotate_undo")} == {("annotate", 1)}


def test_votes_go_through_while_slow_sign_ins_hold_every_sign_in_slot(signin_app, monkeypatch):
    """Two sign-ins stuck in token verification (both 'signin' slots busy) must not delay a vote."""
    _, rest, token = signin_app
    session = uuid.uuid4().hex
    shown = shown_token(rest.call("annotate_sign_in", ["ana", token], session))
    assert shown
    real_verify, release, stuck = users_mod.verify_token, threading.Event(), threading.Semaphore(0)

    def slow_verify(tok, stored):
        if tok == "slow":
            stuck.release()
            release.wait(60)
        return real_verify(tok, stored)

    monkeypatch.setattr(users_mod, "verify_token", slow_verify)
    slow = [threading.Thread(target=rest.call, args=("annotate_sign_in", [f"zed{i}", "slow"], uuid.uuid4().hex))
            for i in range(2)]
    voted, done = {}, threading.Event()

    def vote():
        voted["out"] = rest.call("annotate_left", [shown, "", None], session)
        done.set()

    try:
        for t in slow:
            t.start()
        assert stuck.acquire(timeout=30)  # one sign-in is inside verification
        stuck.acquire(timeout=10)  # and the other (if it shared the votes' one slot, it would queue)
        threading.Thread(target=vote, daemon=True).start()
        assert done.wait(30), "the vote waited for the sign-ins"
        assert not release.is_set()
        assert "recorded: left is better" in str(voted["out"])
    finally:
        release.set()
        for t in slow:
            t.join(60)
