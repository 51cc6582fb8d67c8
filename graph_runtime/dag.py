"""The link graph of a prompt: which node feeds which, the order to run them in, and the cycles
that forbid an order.

Plain dictionaries and three textbook algorithms (reachability, Kahn's sort with a heap, Tarjan's
strongly connected components) instead of networkx: every submission to the server and every
`nodeloom` command validates a prompt, and importing networkx cost each process 80 ms and 12 MB.
Everything here is linear in nodes + links, so a hostile prompt of many cycles cannot make
validation slow (listing every elementary cycle, as before, can be exponential).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from graph_runtime.formats import ApiPrompt, is_link

# A strongly connected component larger than this is reported as a whole, without a cycle path
# per node (finding those is quadratic in its size).
CYCLE_PATHS_UP_TO = 64


@dataclass
class LinkGraph:
    """Edges source → consumer. ``parents[n]``: the nodes ``n`` reads from; ``children[n]``: the
    nodes reading from ``n``. Every node has an entry in both."""

    parents: dict[str, set[str]] = field(default_factory=dict)
    children: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, prompt: ApiPrompt) -> LinkGraph:
        """Every link between two nodes present in ``prompt`` (malformed nodes and dangling links
        are left to the validation that reports them)."""
        graph = cls({node_id: set() for node_id in prompt}, {node_id: set() for node_id in prompt})
        for node_id, node in prompt.items():
            inputs: Any = node.get("inputs") if isinstance(node, dict) else None
            for value in inputs.values() if isinstance(inputs, dict) else ():
                if is_link(value) and str(value[0]) in prompt:
                    graph.parents[node_id].add(str(value[0]))
                    graph.children[str(value[0])].add(node_id)
        return graph

    def ancestors(self, nodes: Iterable[str]) -> set[str]:
        """Every node one of ``nodes`` reads from, directly or not (those only through a cycle):
        one search, however many nodes."""
        return _reach(nodes, self.parents)

    def descendants(self, nodes: Iterable[str]) -> set[str]:
        """Every node reading from one of ``nodes``, directly or not (those only through a cycle):
        one search, however many nodes."""
        return _reach(nodes, self.children)

    def subgraph(self, nodes: Iterable[str]) -> LinkGraph:
        keep = set(nodes) & self.parents.keys()
        return LinkGraph({n: self.parents[n] & keep for n in keep}, {n: self.children[n] & keep for n in keep})

    def order(self, key: Callable[[str], Any]) -> list[str]:
        """A topological order, the smallest ``key`` first among the nodes ready at each step
        (networkx's lexicographical_topological_sort). Raises ValueError on a cycle."""
        waiting = {n: len(parents) for n, parents in self.parents.items()}
        ready = [(key(n), n) for n, count in waiting.items() if count == 0]
        heapq.heapify(ready)
        order: list[str] = []
        while ready:
            _, node_id = heapq.heappop(ready)
            order.append(node_id)
            for child in self.children[node_id]:
                waiting[child] -= 1
                if waiting[child] == 0:
                    heapq.heappush(ready, (key(child), child))
        if len(order) != len(waiting):
            raise ValueError("the links form a cycle")
        return order

    def cycles(self, key: Callable[[str], Any]) -> list[tuple[str, list[str]]]:
        """``(node, cycle)`` for every node on a cycle, in ``key`` order: ``cycle`` is the shortest
        one through it (``[a, b]`` for a → b → a; ``[]`` in a component too large to trace)."""
        found = []
        for component in self._cyclic_components():
            for node_id in component:
                path = self._shortest_cycle(node_id, component) if len(component) <= CYCLE_PATHS_UP_TO else []
                found.append((node_id, path))
        return sorted(found, key=lambda item: key(item[0]))

    def _shortest_cycle(self, start: str, component: set[str]) -> list[str]:
        came_from: dict[str, str] = {}
        queue = deque([start])
        while queue:
            current = queue.popleft()
            for child in sorted(self.children[current] & component):  # the same path every run
                if child == start:
                    path = [current]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return path[::-1]
                if child not in came_from:
                    came_from[child] = current
                    queue.append(child)
        raise AssertionError(f"{start} is in a strongly connected component but on no cycle")

    def _cyclic_components(self) -> list[set[str]]:
        """Tarjan's strongly connected components (iterative) that hold a cycle: two or more
        nodes, or one linked to itself."""
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        on_stack: set[str] = set()
        components: list[set[str]] = []
        for root in self.parents:
            if root in index:
                continue
            work = [(root, iter(self.children[root]))]
            index[root] = low[root] = len(index)
            stack.append(root)
            on_stack.add(root)
            while work:
                node_id, children = work[-1]
                child = next(children, None)
                if child is None:
                    work.pop()
                    if work:
                        low[work[-1][0]] = min(low[work[-1][0]], low[node_id])
                    if low[node_id] == index[node_id]:
                        component = set()
                        while True:
                            member = stack.pop()
                            on_stack.discard(member)
                            component.add(member)
                            if member == node_id:
                                break
                        if len(component) > 1 or node_id in self.children[node_id]:
                            components.append(component)
                elif child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(self.children[child])))
                elif child in on_stack:
                    low[node_id] = min(low[node_id], index[child])
        return components


def _reach(starts: Iterable[str], edges: dict[str, set[str]]) -> set[str]:
    found: set[str] = set()
    stack = [n for start in starts for n in edges.get(start, ())]
    while stack:
        current = stack.pop()
        if current not in found:
            found.add(current)
            stack.extend(edges[current] - found)
    return found
