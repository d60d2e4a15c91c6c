"""The NATS mirror's claim order: pending keys walked by priority, eta and enqueue order, however they changed."""

from __future__ import annotations

import random

from omniq_nb.storage.nats_mirror import Order, PendingOrder


def expected(orders: dict[str, Order]) -> list[str]:
    return [key for key, _ in sorted(orders.items(), key=lambda item: (item[1], item[0]))]


def test_keys_come_in_claim_order_after_puts_moves_and_discards() -> None:
    pending = PendingOrder()
    truth: dict[str, Order] = {}
    rng = random.Random(7)
    for step in range(5_000):
        key = f"t{rng.randrange(300)}"
        if rng.random() < 0.3:
            pending.discard(key)
            truth.pop(key, None)
        else:
            order = (-rng.randrange(3), float(rng.randrange(50)), step)
            pending.put(key, order)
            truth[key] = order
        if step % 97 == 0:
            assert list(pending) == expected(truth)
    assert list(pending) == expected(truth)


def test_a_key_put_again_in_the_same_order_comes_once() -> None:
    pending = PendingOrder()
    pending.put("a", (0, 1.0, 1))
    pending.put("a", (0, 2.0, 1))
    pending.put("a", (0, 1.0, 1))  # back where it was: two entries now say the same
    pending.put("b", (0, 1.5, 2))
    assert list(pending) == ["a", "b"]


def test_a_walk_under_way_passes_over_keys_claimed_meanwhile_and_does_not_see_new_ones() -> None:
    pending = PendingOrder()
    for n in range(10):
        pending.put(f"t{n}", (0, 0.0, n))
    walk = iter(pending)
    assert next(walk) == "t0"
    pending.discard("t1")  # claimed by another walk
    pending.put("t10", (-1, 0.0, 10))  # first in claim order, but inserted after this walk began
    assert list(walk) == [f"t{n}" for n in range(2, 10)]
    assert list(pending) == ["t10", "t0", *(f"t{n}" for n in range(2, 10))]


def test_a_key_that_moves_back_during_a_walk_comes_once() -> None:
    pending = PendingOrder()
    pending.put("a", (0, 2.0, 1))
    pending.put("b", (0, 1.5, 2))
    list(pending)
    pending.put("a", (0, 1.0, 1))  # moved first: the list now holds an older entry of it, further on
    walk = iter(pending)
    assert next(walk) == "a"
    pending.put("a", (0, 2.0, 1))  # and back, while the walk is under way: that older entry is current again
    assert list(walk) == ["b"]


def test_stale_entries_do_not_pile_up_while_tasks_come_and_go() -> None:
    pending = PendingOrder()
    for n in range(100_000):
        pending.put(f"t{n}", (0, 0.0, n))
        if n % 2:  # cancelled in the middle, never at the front
            pending.discard(f"t{n}")
        if n % 1_000 == 0:
            list(pending)
    assert list(pending) == [f"t{n}" for n in range(0, 100_000, 2)]


def test_stale_entries_do_not_pile_up_in_a_mirror_that_never_claims() -> None:
    pending = PendingOrder()
    for n in range(10):
        pending.put(f"live{n}", (0, 0.0, n))
    for n in range(50_000):  # tasks pending for a moment, claimed by other workers
        pending.put(f"t{n}", (0, 1.0, n))
        pending.discard(f"t{n}")
    assert len(pending._entries) < 5_000
    assert list(pending) == [f"live{n}" for n in range(10)]
