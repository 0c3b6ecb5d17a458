"""Server-side node positions: a layered layout by longest path from the sources.

x is a node's layer: 0 for a node with no incoming connection, otherwise one more than the
largest layer among its sources. y is the node's rank within its layer, in creation order.
The same graph always gets the same positions.
"""

from collections import deque
from collections.abc import Hashable, Mapping, Set
from typing import TypeVar

Node = TypeVar("Node", bound=Hashable)


def layered_positions(
    created_order: Mapping[Node, int], outgoing: Mapping[Node, Set[Node]]
) -> dict[Node, tuple[int, int]]:
    """Positions for an acyclic graph given each node's creation rank and its out-edges."""
    indegree = dict.fromkeys(created_order, 0)
    for node in created_order:
        for target in outgoing.get(node, ()):
            indegree[target] += 1
    layer = dict.fromkeys(created_order, 0)
    ready = deque(node for node, count in indegree.items() if count == 0)
    while ready:
        node = ready.popleft()
        for target in outgoing.get(node, ()):
            layer[target] = max(layer[target], layer[node] + 1)
            indegree[target] -= 1
            if indegree[target] == 0:
                ready.append(target)
    by_layer: dict[int, list[Node]] = {}
    for node in sorted(created_order, key=created_order.__getitem__):
        by_layer.setdefault(layer[node], []).append(node)
    return {node: (x, y) for x, members in by_layer.items() for y, node in enumerate(members)}
