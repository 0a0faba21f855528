"""The batch queue of ``fcnseg serve`` on its own: which items run together, in which order, and what fails.

The batches are recorded by a fake forward pass; items are submitted in one tick of the event loop (the worker runs
only when the test awaits), so the grouping is decided by the rules, not by timing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

import pytest

from fcnseg.serve.batching import Batcher, QueueFull


class Recorder:
    """A forward pass that records its batches and answers ``item * 10``; items ``"boom"`` make it raise."""

    def __init__(self) -> None:
        self.batches: list[list] = []

    def __call__(self, items: list, key: Hashable) -> list:
        self.batches.append([(key, item) for item in items])
        if "boom" in items:
            raise RuntimeError("the model failed")
        return [item * 10 for item in items]


async def run_all(batcher: Batcher, jobs: list[tuple]) -> list:
    """Submit ``(item, key[, pixels])`` jobs in one tick and gather their answers (exceptions as values)."""
    batcher.start()
    try:
        await asyncio.wait_for(batcher.ready.wait(), 10)
        tasks = [asyncio.ensure_future(batcher.submit(*job)) for job in jobs]
        return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
    finally:
        await batcher.stop()


def make(recorder: Recorder, **options) -> Batcher:
    settings = {"max_batch_size": 4, "max_wait_s": 30.0} | options  # a long wait: batches close because they are full
    return Batcher(recorder, **settings)


def test_concurrent_items_of_one_key_run_as_one_batch() -> None:
    recorder = Recorder()
    answers = asyncio.run(run_all(make(recorder), [(i, "A") for i in range(4)]))
    assert answers == [0, 10, 20, 30]
    assert recorder.batches == [[("A", 0), ("A", 1), ("A", 2), ("A", 3)]]


def test_batches_hold_at_most_max_batch_size_and_a_partial_batch_runs_after_the_wait() -> None:
    recorder = Recorder()
    answers = asyncio.run(run_all(make(recorder, max_batch_size=2, max_wait_s=0.05), [(i, "A") for i in range(5)]))
    assert answers == [0, 10, 20, 30, 40]
    assert [len(batch) for batch in recorder.batches] == [2, 2, 1]


def test_other_sizes_are_not_starved_by_a_stream_of_one_size() -> None:
    """The oldest item opens the next batch: B, queued second, runs right after the first batch of A."""
    recorder = Recorder()
    jobs = [(1, "A"), (2, "B"), (3, "A"), (4, "A"), (5, "A"), (6, "A")]
    answers = asyncio.run(run_all(make(recorder, max_batch_size=2, max_wait_s=0.05), jobs))
    assert answers == [10, 20, 30, 40, 50, 60]
    keys = [[key for key, _ in batch] for batch in recorder.batches]
    assert keys == [["A", "A"], ["B"], ["A", "A"], ["A"]]
    assert [item for _, item in recorder.batches[0]] == [1, 3]  # arrival order within a key


def test_a_batch_holds_at_most_max_pixels_but_a_larger_item_still_runs() -> None:
    recorder = Recorder()
    jobs = [(1, "A", 60), (2, "A", 60), (3, "A", 60), (4, "A", 500)]
    answers = asyncio.run(run_all(make(recorder, max_pixels=150, max_wait_s=0.05), jobs))
    assert answers == [10, 20, 30, 40]
    assert [[item for _, item in batch] for batch in recorder.batches] == [[1, 2], [3], [4]]


def test_batching_off_runs_every_item_alone() -> None:
    recorder = Recorder()
    asyncio.run(run_all(make(recorder, max_batch_size=1), [(i, "A") for i in range(3)]))
    assert [len(batch) for batch in recorder.batches] == [1, 1, 1]


def test_a_failing_batch_fails_only_its_items() -> None:
    recorder = Recorder()
    answers = asyncio.run(
        run_all(make(recorder, max_batch_size=2, max_wait_s=0.05), [("boom", "A"), (1, "A"), (2, "B")])
    )
    assert isinstance(answers[0], RuntimeError) and isinstance(answers[1], RuntimeError)
    assert answers[2] == 20


def test_a_full_queue_refuses_and_the_queued_items_still_run() -> None:
    recorder = Recorder()
    answers = asyncio.run(run_all(make(recorder, max_queue=3, max_wait_s=0.05), [(i, "A") for i in range(5)]))
    assert answers[:3] == [0, 10, 20]
    assert all(isinstance(a, QueueFull) for a in answers[3:])


def test_ready_only_after_prepare_and_a_failed_prepare_is_reported() -> None:
    calls: list[str] = []

    async def scenario(prepare) -> tuple[bool, str | None]:
        batcher = Batcher(Recorder(), max_batch_size=1, max_wait_s=0, prepare=prepare)
        assert not batcher.ready.is_set()
        batcher.start()
        await asyncio.wait_for(batcher.ready.wait(), 10)
        await batcher.stop()
        return batcher.ready.is_set(), batcher.failure

    assert asyncio.run(scenario(lambda: calls.append("warm"))) == (True, None)
    assert calls == ["warm"]

    def broken() -> None:
        raise OSError("no such device")

    ready, failure = asyncio.run(scenario(broken))
    assert ready and failure is not None and "no such device" in failure


def test_a_cancelled_caller_does_not_block_the_others() -> None:
    recorder = Recorder()

    async def scenario() -> list:
        batcher = make(recorder, max_batch_size=2, max_wait_s=0.05)
        batcher.start()
        await batcher.ready.wait()
        gone = asyncio.ensure_future(batcher.submit(1, "A"))
        kept = asyncio.ensure_future(batcher.submit(2, "A"))
        await asyncio.sleep(0)
        gone.cancel()
        answer = await asyncio.wait_for(kept, 10)
        await batcher.stop()
        return [answer]

    assert asyncio.run(scenario()) == [20]
    assert [[item for _, item in batch] for batch in recorder.batches] == [[2]]


@pytest.mark.parametrize("size", [1, 3])
def test_every_answer_reaches_its_own_caller(size: int) -> None:
    recorder = Recorder()
    jobs = [(i, ("A", "B", "C")[i % 3]) for i in range(12)]
    answers = asyncio.run(run_all(make(recorder, max_batch_size=size, max_wait_s=0.01), jobs))
    assert answers == [i * 10 for i in range(12)]
