"""Inside sfu/, modules import each other without a cycle, TYPE_CHECKING imports included.

Objects form a tree (Router → Transport → Producer/Consumer) and a child gets
callbacks and values from its parent, never the parent itself: the import graph
says so, and stays so.
"""

from __future__ import annotations

from graphlib import CycleError, TopologicalSorter

from tests.test_layers import imported_names, imports_of, module_name, modules


def sfu_import_graph() -> dict[str, set[str]]:
    """sfu module → the sfu modules it imports (the package itself excluded)."""
    graph: dict[str, set[str]] = {}
    for path in modules("sfu"):
        name = module_name(path)
        graph[name] = {n for n in imports_of(path) if n.startswith("sfu.") and n != name}
    return graph


def cycle_in(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as err:
        return list(err.args[1])
    return None


def test_the_cycle_check_finds_a_cycle_hidden_under_type_checking() -> None:
    assert cycle_in({"sfu.a": {"sfu.b"}, "sfu.b": set()}) is None
    assert cycle_in({"sfu.a": {"sfu.b"}, "sfu.b": {"sfu.c"}, "sfu.c": {"sfu.a"}}) is not None
    guarded = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from sfu.a import A\n"
    assert "sfu.a" in imported_names(guarded, "sfu.b")


def test_sfu_modules_import_each_other_without_a_cycle() -> None:
    graph = sfu_import_graph()
    assert {"sfu.router", "sfu.transport", "sfu.producer", "sfu.consumer"} <= set(graph)
    assert cycle_in(graph) is None, " → ".join(cycle_in(graph) or [])


def test_a_consumer_knows_neither_its_producer_nor_its_transport() -> None:
    graph = sfu_import_graph()
    assert not graph["sfu.consumer"] & {"sfu.producer", "sfu.transport", "sfu.router"}
    assert not graph["sfu.linkstats"] & {"sfu.consumer", "sfu.producer", "sfu.transport"}
