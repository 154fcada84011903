"""The pure parts of the search statement builder: how value filters split into kept classes and counted postings."""

from __future__ import annotations

import bisect
import importlib.util
import random
from decimal import Decimal
from pathlib import Path

import pytest

from instruments.models import VALUE_CLASS_BOUNDS
from instruments.search_sql import SearchFilters, ValueRange, value_bounds, value_split

W = Decimal(10000)  # 万元
TOP = len(VALUE_CLASS_BOUNDS)


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, (None, None, True)),
        ({"min_value": 5 * W}, (5 * W, None, True)),
        ({"max_value": 5 * W}, (None, 5 * W, True)),
        ({"large": True}, (50 * W, None, True)),
        ({"large": False}, (None, 50 * W, False)),
        ({"large": True, "min_value": 30 * W}, (50 * W, None, True)),
        ({"large": True, "min_value": 80 * W}, (80 * W, None, True)),
        ({"large": False, "max_value": 50 * W}, (None, 50 * W, False)),  # at equal values the exclusive bound
        ({"large": False, "max_value": 49 * W}, (None, 49 * W, True)),
        ({"large": False, "max_value": 60 * W}, (None, 50 * W, False)),
        ({"large": True, "threshold": 88 * W}, (88 * W, None, True)),
    ],
)
def test_value_bounds(filters: dict[str, object], expected: tuple[object, object, bool]) -> None:
    assert value_bounds(SearchFilters(**filters)) == expected  # type: ignore[arg-type]


def r(low: Decimal | None, low_in: bool, high: Decimal | None, high_in: bool, sign: int) -> ValueRange:
    return ValueRange(low, low_in, high, high_in, sign)


@pytest.mark.parametrize(
    ("low", "high", "inclusive", "classes", "postings"),
    [
        # No bound: every class, nothing counted besides.
        (None, None, True, (0, TOP), ()),
        # Bounds on class edges (50万 = 大型, 10万, 100万): whole classes only.
        (50 * W, None, True, (3, TOP), ()),
        (None, 50 * W, False, (0, 2), ()),
        (10 * W, 100 * W, False, (1, 3), ()),
        # An inclusive upper bound on an edge: the instruments of exactly that value are counted besides.
        (None, 50 * W, True, (0, 2), (r(50 * W, True, 50 * W, True, 1),)),
        # A bound near the top of its class (log-uniform: less than half above it): the part counted directly.
        (18 * W, None, True, (2, TOP), (r(18 * W, True, 20 * W, False, 1),)),
        # Near the bottom: the whole class, less the postings below the bound.
        (11 * W, None, True, (1, TOP), (r(10 * W, True, 11 * W, False, -1),)),
        # Upper bounds, both ways; the complement of an inclusive bound starts above it.
        (None, 190 * W, True, (0, 4), (r(190 * W, False, 200 * W, False, -1),)),
        (None, 400 * W, True, (0, 5), (r(400 * W, False, 500 * W, False, -1),)),
        (None, 110 * W, False, (0, 3), (r(100 * W, True, 110 * W, False, 1),)),
        (None, 190 * W, False, (0, 4), (r(190 * W, True, 200 * W, False, -1),)),
        # The unbounded first and last classes are always counted directly.
        (5 * W, None, True, (1, TOP), (r(5 * W, True, 10 * W, False, 1),)),
        (None, 1500 * W, True, (0, TOP - 1), (r(1000 * W, True, 1500 * W, True, 1),)),
        # Both bounds cutting classes.
        (15 * W, 250 * W, True, (2, 4), (r(15 * W, True, 20 * W, False, 1), r(200 * W, True, 250 * W, True, 1))),
        (12 * W, 110 * W, True, (1, 3), (r(10 * W, True, 12 * W, False, -1), r(100 * W, True, 110 * W, True, 1))),
        # A range inside one class, or an empty one: over the postings.
        (21 * W, 29 * W, True, None, (r(21 * W, True, 29 * W, True, 1),)),
        (50 * W, 40 * W, True, None, (r(50 * W, True, 40 * W, True, 1),)),
        (50 * W, 50 * W, False, None, (r(50 * W, True, 50 * W, False, 1),)),
    ],
)
def test_value_split(
    low: Decimal | None,
    high: Decimal | None,
    inclusive: bool,
    classes: tuple[int, int] | None,
    postings: tuple[ValueRange, ...],
) -> None:
    split = value_split(low, high, inclusive)
    assert (split.classes, split.postings) == (classes, postings)


def _in(v: Decimal, low: Decimal | None, low_in: bool, high: Decimal | None, high_in: bool) -> bool:
    return (low is None or (v >= low if low_in else v > low)) and (high is None or (v <= high if high_in else v < high))


def test_value_split_counts_exactly() -> None:
    # Whatever the bounds, the classes plus and minus the counted postings are exactly the values in range.
    rng = random.Random(3)
    edges = [*VALUE_CLASS_BOUNDS, Decimal(0)]
    values = [Decimal(rng.choice([rng.randint(0, 20_000_000), int(rng.choice(edges))])) for _ in range(3000)]
    values += [b + d for b in VALUE_CLASS_BOUNDS for d in (Decimal("-0.01"), Decimal(0), Decimal("0.01"))]
    candidates = [None, Decimal(0), *VALUE_CLASS_BOUNDS, *(Decimal(rng.randint(1, 15_000_000)) for _ in range(30))]
    for _ in range(1500):
        low, high = rng.choice(candidates), rng.choice(candidates)
        inclusive = rng.random() < 0.5
        split = value_split(low, high, inclusive)
        counted = 0
        for v in values:
            klass = bisect.bisect_right(VALUE_CLASS_BOUNDS, v)  # as width_bucket
            if split.classes is not None and split.classes[0] <= klass <= split.classes[1]:
                counted += 1
            counted += sum(p.sign for p in split.postings if _in(v, p.low, p.low_inclusive, p.high, p.high_inclusive))
        assert counted == sum(_in(v, low, True, high, inclusive) for v in values), (low, high, inclusive, split)


def test_the_migration_froze_the_same_bounds() -> None:
    path = Path(__file__).parents[2] / "alembic/versions/2026-11-28-0200_frequent_terms_value_classes.py"
    spec = importlib.util.spec_from_file_location("revision_0010", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert f"ARRAY[{', '.join(str(int(b)) for b in VALUE_CLASS_BOUNDS)}]::numeric[]" == module.BOUNDS
