"""The link graph's order, ancestors and cycles, checked against networkx on random graphs."""

from __future__ import annotations

import random

import networkx as nx
import pytest

from graph_runtime.dag import CYCLE_PATHS_UP_TO, LinkGraph
from graph_runtime.validation import node_sort_key


def prompt_of(edges: list[tuple[str, str]], nodes: list[str]) -> dict:
    """A prompt whose node ``b`` reads ``a`` for every edge a → b (one input per link)."""
    prompt: dict = {n: {"class_type": "X", "inputs": {}} for n in nodes}
    for index, (source, target) in enumerate(edges):
        prompt[target]["inputs"][f"in{index}"] = [source, 0]
    return prompt


def random_graph(seed: int, *, acyclic: bool) -> tuple[list[str], list[tuple[str, str]]]:
    rng = random.Random(seed)
    nodes = [str(i) for i in rng.sample(range(1, 200), rng.randint(1, 30))] + ["12:3", "12:10"][:rng.randint(0, 2)]
    edges = []
    for _ in range(rng.randint(0, 60)):
        a, b = rng.sample(nodes, 2) if len(nodes) > 1 else (nodes[0], nodes[0])
        if acyclic and nodes.index(a) > nodes.index(b):
            a, b = b, a
        if a != b or not acyclic:
            edges.append((a, b))
    return nodes, edges


def reference(nodes: list[str], edges: list[tuple[str, str]]) -> nx.DiGraph:
    graph = nx.DiGraph()
    graph.add_nodes_from(nodes)
    graph.add_edges_from(edges)
    return graph


@pytest.mark.parametrize("seed", range(40))
def test_order_and_ancestors_match_networkx(seed):
    nodes, edges = random_graph(seed, acyclic=True)
    graph, expected = LinkGraph.of(prompt_of(edges, nodes)), reference(nodes, edges)
    assert graph.order(node_sort_key) == list(nx.lexicographical_topological_sort(expected, key=node_sort_key))
    assert graph.cycles(node_sort_key) == []
    for node in nodes:
        assert graph.ancestors([node]) == nx.ancestors(expected, node)
        assert graph.descendants([node]) == nx.descendants(expected, node)
    some = nodes[::3]
    assert graph.ancestors(some) == set().union(*(nx.ancestors(expected, n) for n in some))


@pytest.mark.parametrize("seed", range(40))
def test_every_node_on_a_cycle_is_reported_with_its_shortest_cycle(seed):
    nodes, edges = random_graph(seed, acyclic=False)
    graph, expected = LinkGraph.of(prompt_of(edges, nodes)), reference(nodes, edges)
    on_cycles = {n for cycle in nx.simple_cycles(expected) for n in cycle}
    found = graph.cycles(node_sort_key)
    assert [n for n, _ in found] == sorted(on_cycles, key=node_sort_key)
    for node, path in found:
        assert path[0] == node
        assert all(expected.has_edge(a, b) for a, b in zip(path, path[1:] + path[:1]))
        shortest = min(len(nx.shortest_path(expected, child, node)) for child in expected.successors(node)
                       if nx.has_path(expected, child, node))
        assert len(path) == shortest
    if on_cycles:
        with pytest.raises(ValueError, match="cycle"):
            graph.order(node_sort_key)


def test_a_large_loop_is_reported_whole_and_fast():
    # a ring with chords: exponentially many elementary cycles, one strongly connected component
    size = 3000
    nodes = [str(i) for i in range(size)]
    edges = [(str(i), str((i + 1) % size)) for i in range(size)] + [(str(i), str((i + 7) % size)) for i in range(0, size, 3)]
    found = LinkGraph.of(prompt_of(edges, nodes)).cycles(node_sort_key)
    assert len(found) == size > CYCLE_PATHS_UP_TO and all(path == [] for _, path in found)


def test_links_to_missing_nodes_and_malformed_nodes_are_left_out():
    prompt = {"1": {"class_type": "X", "inputs": {"a": ["9", 0], "b": ["2", 0], "c": 5}}, "2": "not a node",
              "3": {"class_type": "X", "inputs": "nope"}}
    graph = LinkGraph.of(prompt)
    assert graph.parents == {"1": {"2"}, "2": set(), "3": set()}
    assert graph.order(node_sort_key) == ["2", "1", "3"]
