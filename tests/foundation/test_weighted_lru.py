"""The weighted LRU keeps what fits its budget, dropping the least recently used first."""

from __future__ import annotations

from foundation.weighted_lru import WeightedLRU


def test_the_least_recently_used_go_first_until_the_rest_fits() -> None:
    memory: WeightedLRU[str, bytes] = WeightedLRU(10, len)
    memory.put("a", b"1234")
    memory.put("b", b"1234")
    assert memory.get("a") == b"1234"  # now "b" is the least recently used
    memory.put("c", b"1234")
    assert memory.get("b") is None
    assert memory.get("a") == b"1234" and memory.get("c") == b"1234"


def test_an_entry_heavier_than_the_budget_is_not_kept_and_evicts_nothing() -> None:
    memory: WeightedLRU[str, bytes] = WeightedLRU(10, len)
    memory.put("a", b"12")
    memory.put("big", b"12345678901")
    assert memory.get("big") is None
    assert memory.get("a") == b"12"


def test_a_key_already_kept_keeps_its_first_value() -> None:
    memory: WeightedLRU[str, bytes] = WeightedLRU(10, len)
    memory.put("a", b"12")
    memory.put("a", b"34")
    assert memory.get("a") == b"12"
