"""The generated modules reuse the arrays of earlier calls (fresh pages cost a fault each),
but only arrays that nothing refers to any more: a result the caller still holds, or a
view of it, is never overwritten."""
import threading

import numpy as np
import pytest
from cellcheck import all_sizes, generated, problem
from conftest import SPECS

SIZES = {"I": 5, "H": 6}


def address(a):
    return a.__array_interface__["data"][0]


def train(module, params, inputs, states, dy):
    y, final, cache = module.forward(params, inputs, states)
    return y, final, cache, module.backward(cache, dy)


def arrays(result):
    y, final, cache, grads = result
    found = [y, *final.values(), *cache["saved"].values()]
    for group in grads:
        found += list(group.values())
    return found


@pytest.fixture(params=SPECS, ids=lambda p: p.stem)
def cell(request):
    module, _ = generated(request.param)
    return module


def make(module, seed):
    params, inputs, states = problem(module, T=7, B=3, sizes=SIZES, dtype=np.float32, seed=seed)
    dy = np.random.default_rng(seed).normal(
        size=(7, 3, all_sizes(module, SIZES)[module.OUTPUT_DIM])).astype(np.float32)
    return params, inputs, states, dy


def test_held_results_are_never_overwritten(cell):
    a, b = make(cell, 1), make(cell, 2)
    first = train(cell, *a)
    before = [x.copy() for x in arrays(first)]
    second = train(cell, *b)
    for kept, now in zip(before, arrays(first)):
        assert np.array_equal(kept, now, equal_nan=True)
    for x in arrays(first):
        for z in arrays(second):
            assert not np.shares_memory(x, z)


def test_dropped_results_are_reused_and_give_identical_answers(cell):
    a = make(cell, 1)
    y, final, cache, grads = train(cell, *a)
    where, expected = address(y), [x.copy() for x in arrays((y, final, cache, grads))]
    del y, final, cache, grads
    again = train(cell, *a)
    assert address(again[0]) == where            # the same memory, handed out again
    for x, e in zip(arrays(again), expected):
        assert np.array_equal(x, e)              # bitwise: no stale values leak in


def test_a_view_keeps_its_array_alive(cell):
    a = make(cell, 1)
    y, final, _, _ = train(cell, *a)
    state = next(iter(final.values())).copy()
    kept = next(iter(final.values()))          # a view into the state sequence
    del y, final
    train(cell, *make(cell, 2))
    assert np.array_equal(kept, state)


def test_a_training_loop_keeps_bounded_memory(cell):
    a = make(cell, 1)
    train(cell, *a)
    counts = []
    for _ in range(12):
        result = train(cell, *a)
        counts.append(sum(len(e) for e in cell._workspace._entries.values()))
    del result
    assert counts[-1] == counts[3]               # steady state: nothing new is kept
    cell.clear_workspace()
    assert not cell._workspace._entries


def test_concurrent_calls_from_threads_match_sequential_ones(cell):
    problems = [make(cell, seed) for seed in range(4)]
    expected = [[x.copy() for x in arrays(train(cell, *p))] for p in problems]
    got = [None] * len(problems)

    def run(k):
        for _ in range(5):
            got[k] = [x.copy() for x in arrays(train(cell, *problems[k]))]

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(problems))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g, e in zip(got, expected):
        assert all(np.array_equal(x, y) for x, y in zip(g, e))
