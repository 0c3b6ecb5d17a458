"""Random valid operation sequences, checked against a plain in-memory model after each request."""

from dataclasses import dataclass, field
from functools import cache
from typing import Any

import httpx
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.conftest import put_agent, put_node_type

Params = dict[str, int]
Patch = dict[str, int | None]
Operation = dict[str, Any]

PARAMS = st.dictionaries(
    st.sampled_from(["a", "b", "c"]), st.integers(0, 9) | st.none(), max_size=3
)


def merge(params: Params, patch: Patch) -> Params:
    merged = dict(params)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def reaches(edges: set[tuple[str, str]], start: str, goal: str) -> bool:
    stack, seen = [start], {start}
    while stack:
        node = stack.pop()
        for s, t in edges:
            if s == node and t not in seen:
                if t == goal:
                    return True
                seen.add(t)
                stack.append(t)
    return False


@dataclass
class GraphModel:
    """The graph the service should store: nodes in creation order with their params, and edges."""

    nodes: dict[str, tuple[int, Params]] = field(default_factory=dict)  # id -> (rank, params)
    edges: set[tuple[str, str]] = field(default_factory=set)
    rank: int = 0

    def create(self, node: str, params: Params) -> None:
        self.nodes[node] = (self.rank, params)
        self.rank += 1

    def update(self, node: str, patch: Patch) -> None:
        rank, params = self.nodes[node]
        self.nodes[node] = (rank, merge(params, patch))

    def delete(self, node: str) -> None:
        del self.nodes[node]
        self.edges = {(s, t) for s, t in self.edges if node not in (s, t)}

    def refusal(self, source: str, target: str) -> str | None:
        """The error code a new connection from `source` to `target` is refused with, if any."""
        if source == target:
            return "self_loop"
        if (source, target) in self.edges:
            return "connection_exists"
        if reaches(self.edges, target, source):
            return "graph_cycle"
        return None

    def positions(self) -> dict[str, dict[str, int]]:
        """Layers by longest path from a root; within a layer, creation order."""

        @cache
        def layer(node: str) -> int:
            parents = [s for s, t in self.edges if t == node]
            return max((layer(p) + 1 for p in parents), default=0)

        rows: dict[int, list[str]] = {}
        for node in sorted(self.nodes, key=lambda n: self.nodes[n][0]):
            rows.setdefault(layer(node), []).append(node)
        return {
            node: {"x": x, "y": y} for x, members in rows.items() for y, node in enumerate(members)
        }


def create_nodes(node_type: str, params: Params, count: int, source: str | None) -> list[Operation]:
    """`count` nodes with temp refs t0, t1, ..., the first connected from `source` if given."""
    ops: list[Operation] = [
        {
            "op": "create_node",
            "node_type_id": node_type,
            "temp_ref_id": f"t{i}",
            "params_used": params,
        }
        for i in range(count)
    ]
    if source:
        ops.append(
            {"op": "create_connection", "source_agent_node_id": source, "target_temp_ref_id": "t0"}
        )
    return ops


def connection(op: str, source: str, target: str) -> list[Operation]:
    """A create_connection or delete_connection between two stored nodes."""
    return [{"op": op, "source_agent_node_id": source, "target_agent_node_id": target}]


class GraphMachine(RuleBasedStateMachine):
    """Sends random valid updates to one fresh agent and keeps the model in step."""

    client: httpx.Client
    node_type: str

    @initialize()
    def new_agent(self) -> None:
        self.agent = put_agent(self.client)["id"]
        self.model = GraphModel()

    def send(self, operations: list[Operation]) -> httpx.Response:
        return self.client.post(f"/v1/agents/{self.agent}/update", json={"operations": operations})

    def pick(self, data: st.DataObject) -> str:
        return data.draw(st.sampled_from(sorted(self.model.nodes)))

    @rule(params=PARAMS, count=st.integers(1, 3), link=st.booleans(), data=st.data())
    def create_nodes(self, params: Patch, count: int, link: bool, data: st.DataObject) -> None:
        clean = {k: v for k, v in params.items() if v is not None}
        source = self.pick(data) if link and self.model.nodes else None
        response = self.send(create_nodes(self.node_type, clean, count, source))
        assert response.status_code == 200, response.text
        for created in response.json()["created_nodes"]:
            self.model.create(created["agent_node_id"], clean)
        if source:
            self.model.edges.add((source, response.json()["created_nodes"][0]["agent_node_id"]))

    @precondition(lambda self: bool(self.model.nodes))
    @rule(patch=PARAMS, data=st.data())
    def update_node(self, patch: Patch, data: st.DataObject) -> None:
        node = self.pick(data)
        response = self.send([{"op": "update_node", "agent_node_id": node, "params_used": patch}])
        assert response.status_code == 200, response.text
        self.model.update(node, patch)

    @precondition(lambda self: bool(self.model.nodes))
    @rule(data=st.data())
    def delete_node(self, data: st.DataObject) -> None:
        node = self.pick(data)
        assert self.send([{"op": "delete_node", "agent_node_id": node}]).status_code == 200
        self.model.delete(node)

    @precondition(lambda self: bool(self.model.nodes))
    @rule(data=st.data())
    def connect(self, data: st.DataObject) -> None:
        source, target = self.pick(data), self.pick(data)
        response = self.send(connection("create_connection", source, target))
        expected = self.model.refusal(source, target)
        if expected is None:
            self.model.edges.add((source, target))
            assert response.status_code == 200, response.text
        else:
            assert response.json()["error"]["code"] == expected

    @precondition(lambda self: bool(self.model.edges))
    @rule(data=st.data())
    def disconnect(self, data: st.DataObject) -> None:
        source, target = data.draw(st.sampled_from(sorted(self.model.edges)))
        response = self.send(connection("delete_connection", source, target))
        assert response.status_code == 200, response.text
        self.model.edges.discard((source, target))

    @invariant()
    def stored_graph_matches(self) -> None:
        if not hasattr(self, "agent"):
            return
        graph = self.client.get(f"/v1/agents/{self.agent}/graph").json()
        stored = {n["agent_node_id"]: n for n in graph["nodes"]}
        assert set(stored) == set(self.model.nodes)
        assert {
            (c["source_agent_node_id"], c["target_agent_node_id"]) for c in graph["connections"]
        } == self.model.edges
        for node, (_, params) in self.model.nodes.items():
            assert stored[node]["params_used"] == params
        for node, position in self.model.positions().items():
            assert stored[node]["position"] == position


def test_stored_graph_matches_the_model_after_every_request(client: httpx.Client) -> None:
    class Machine(GraphMachine):
        pass

    Machine.client, Machine.node_type = client, put_node_type(client)
    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=12,
            stateful_step_count=12,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        ),
    )
