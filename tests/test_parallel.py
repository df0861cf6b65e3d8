"""The data steps' one process pool: results in order, in other processes only when worth it, errors passed on."""

from __future__ import annotations

import os

import pytest

from catdog.data.parallel import ordered_map


def _pid_and_square(n: int) -> tuple[int, int]:
    return os.getpid(), n * n


def _refuse_seven(n: int) -> int:
    if n == 7:
        raise ValueError("seven")
    return n


def test_results_come_back_in_order_from_other_processes() -> None:
    results = list(ordered_map(_pid_and_square, range(40), workers=2, chunksize=3))
    assert [square for _, square in results] == [n * n for n in range(40)]
    assert os.getpid() not in {pid for pid, _ in results}


@pytest.mark.parametrize(("workers", "min_parallel"), [(1, 1), (2, 41)], ids=["one worker", "too few items"])
def test_work_stays_in_this_process_when_a_pool_is_not_worth_it(workers: int, min_parallel: int) -> None:
    results = list(ordered_map(_pid_and_square, range(40), workers=workers, min_parallel=min_parallel))
    assert results == [(os.getpid(), n * n) for n in range(40)]


# In this process an error comes at its own item; in the pool, items 6 and 7 are one chunk, which fails as a whole.
@pytest.mark.parametrize(("workers", "delivered"), [(1, 7), (2, 6)])
def test_an_error_comes_out_in_place_of_its_chunk(workers: int, delivered: int) -> None:
    results = ordered_map(_refuse_seven, range(20), workers=workers, chunksize=2)
    assert [next(results) for _ in range(delivered)] == list(range(delivered))
    with pytest.raises(ValueError, match="seven"):
        next(results)
