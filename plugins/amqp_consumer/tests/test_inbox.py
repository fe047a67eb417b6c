"""The consumer loop's inbox: posts from other threads, and the one wait."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest

from bootkit_amqp_consumer.inbox import Inbox

LONG = 30.0  # a timeout no passing test waits out


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    box = Inbox()
    yield box
    box.close()


def test_a_post_from_another_thread_ends_the_wait(inbox: Inbox) -> None:
    ran: list[str] = []
    poster = threading.Thread(target=inbox.post, args=(lambda: ran.append("posted"),))
    begun = time.monotonic()
    poster.start()
    # Posted before the wait begins (it then does not block) or during it: either
    # way the wait ends with the callback waiting to run.
    readable, idle = inbox.wait([], LONG)
    poster.join(timeout=LONG)
    assert time.monotonic() - begun < LONG / 2, "the wait ran to its timeout"
    assert (readable, idle) == ([], False)
    inbox.run()
    assert ran == ["posted"]


def test_a_wait_that_times_out_with_nothing_posted_is_idle(inbox: Inbox) -> None:
    assert inbox.wait([], 0.01) == ([], True)


def test_a_readable_fd_is_returned_and_the_wait_is_not_idle(inbox: Inbox) -> None:
    r, w = os.pipe()
    try:
        os.write(w, b"x")
        assert inbox.wait([r], LONG) == ([r], False)
    finally:
        os.close(r)
        os.close(w)


def test_callbacks_run_in_order_with_what_they_post(inbox: Inbox) -> None:
    ran: list[int] = []

    def first() -> None:
        ran.append(1)
        inbox.post(lambda: ran.append(3))

    inbox.post(first)
    inbox.post(lambda: ran.append(2))
    inbox.run()
    assert ran == [1, 2, 3]
    assert inbox.empty()


def test_a_refused_inbox_takes_no_posts_and_gives_back_what_did_not_run(inbox: Inbox) -> None:
    def a() -> None:
        pass

    def b() -> None:
        pass

    assert inbox.post(a)
    assert inbox.post(b)
    assert inbox.refuse() == [a, b]
    assert not inbox.post(a)
    assert inbox.empty()


def test_a_closed_inbox_takes_no_posts(inbox: Inbox) -> None:
    inbox.close()
    assert not inbox.post(lambda: None)


def test_the_turn_is_only_given_while_the_loop_holds_it(inbox: Inbox) -> None:
    assert not inbox.take_turn(), "taken before the loop began"
    inbox.hold()
    inbox.let_go()
    assert not inbox.take_turn(), "taken after the loop ended"


def test_the_turn_is_taken_while_the_loop_waits_and_the_loop_resumes_after(
    inbox: Inbox,
) -> None:
    inbox.hold()
    assert not inbox.take_turn(), "taken while the loop is at work"
    read_end, write_end = os.pipe()
    resumed = threading.Event()

    def loop() -> None:
        inbox.wait([read_end], LONG)
        resumed.set()

    waiter = threading.Thread(target=loop)
    waiter.start()
    deadline = time.monotonic() + LONG
    while not inbox.take_turn():  # free once the loop is in its wait
        assert time.monotonic() < deadline, "the turn was never free"
        time.sleep(0.001)
    try:
        os.write(write_end, b"x")  # the wait ends, but the loop must get the turn back
        assert not resumed.wait(0.2), "the loop resumed while another thread had the turn"
    finally:
        inbox.give_turn()
    assert resumed.wait(LONG), "the loop never resumed"
    waiter.join(timeout=LONG)
    assert not inbox.take_turn(), "the resumed loop does not hold the turn"
    inbox.let_go()
    os.close(read_end)
    os.close(write_end)


def test_a_lent_turn_is_taken_by_another_thread_and_the_loop_takes_it_back(
    inbox: Inbox,
) -> None:
    inbox.hold()
    taken, leaving = threading.Event(), threading.Event()
    order: list[str] = []

    def keeper() -> None:
        deadline = time.monotonic() + LONG
        while not inbox.take_turn():  # free once the loop lends it
            assert time.monotonic() < deadline, "the turn was never lent"
            time.sleep(0.001)
        taken.set()
        leaving.wait(LONG)
        order.append("keeper gives it back")
        inbox.give_turn()

    thread = threading.Thread(target=keeper)
    thread.start()
    lent = inbox.lend()
    assert taken.wait(LONG), "the lent turn was not taken"
    leaving.set()
    inbox.take_back(lent)
    order.append("the loop has it")  # `take_back` waited for the keeper
    thread.join(timeout=LONG)
    assert order == ["keeper gives it back", "the loop has it"]
    assert not inbox.take_turn(), "the loop holds the turn again"
    inbox.let_go()
