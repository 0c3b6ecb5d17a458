"""Random valid operation sequences, checked against a plain in-memory model after each request."""

from functools import cache

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

PARAMS = st.dictionaries(
    st.sampled_from(["a", "b", "c"]), st.integers(0, 9) | st.none(), max_size=3
)


def merge(params, patch):
    merged = dict(params)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def reaches(edges, start, goal):
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


def test_stored_graph_matches_the_model_after_every_request(client):
    node_type = put_node_type(client)

    class GraphMachine(RuleBasedStateMachine):
        @initialize()
        def new_agent(self):
            self.agent = put_agent(client)["id"]
            self.nodes = {}  # id -> (creation rank, params)
            self.edges = set()
            self.rank = 0

        def send(self, operations):
            response = client.post(
                f"/v1/agents/{self.agent}/update", json={"operations": operations}
            )
            return response

        def pick(self, data):
            return data.draw(st.sampled_from(sorted(self.nodes)))

        @rule(params=PARAMS, count=st.integers(1, 3), link=st.booleans(), data=st.data())
        def create_nodes(self, params, count, link, data):
            clean = {k: v for k, v in params.items() if v is not None}
            ops = [
                {
                    "op": "create_node",
                    "node_type_id": node_type,
                    "temp_ref_id": f"t{i}",
                    "params_used": clean,
                }
                for i in range(count)
            ]
            source = self.pick(data) if link and self.nodes else None
            if source:
                ops.append(
                    {
                        "op": "create_connection",
                        "source_agent_node_id": source,
                        "target_temp_ref_id": "t0",
                    }
                )
            response = self.send(ops)
            assert response.status_code == 200, response.text
            for created in response.json()["created_nodes"]:
                self.nodes[created["agent_node_id"]] = (self.rank, clean)
                self.rank += 1
            if source:
                self.edges.add((source, response.json()["created_nodes"][0]["agent_node_id"]))

        @precondition(lambda self: self.nodes)
        @rule(patch=PARAMS, data=st.data())
        def update_node(self, patch, data):
            node = self.pick(data)
            response = self.send(
                [{"op": "update_node", "agent_node_id": node, "params_used": patch}]
            )
            assert response.status_code == 200, response.text
            rank, params = self.nodes[node]
            self.nodes[node] = (rank, merge(params, patch))

        @precondition(lambda self: self.nodes)
        @rule(data=st.data())
        def delete_node(self, data):
            node = self.pick(data)
            assert self.send([{"op": "delete_node", "agent_node_id": node}]).status_code == 200
            del self.nodes[node]
            self.edges = {(s, t) for s, t in self.edges if node not in (s, t)}

        @precondition(lambda self: self.nodes)
        @rule(data=st.data())
        def connect(self, data):
            source, target = self.pick(data), self.pick(data)
            response = self.send(
                [
                    {
                        "op": "create_connection",
                        "source_agent_node_id": source,
                        "target_agent_node_id": target,
                    }
                ]
            )
            if source == target:
                expected = "self_loop"
            elif (source, target) in self.edges:
                expected = "connection_exists"
            elif reaches(self.edges, target, source):
                expected = "graph_cycle"
            else:
                expected = None
                self.edges.add((source, target))
            if expected is None:
                assert response.status_code == 200, response.text
            else:
                assert response.json()["error"]["code"] == expected

        @precondition(lambda self: self.edges)
        @rule(data=st.data())
        def disconnect(self, data):
            source, target = data.draw(st.sampled_from(sorted(self.edges)))
            response = self.send(
                [
                    {
                        "op": "delete_connection",
                        "source_agent_node_id": source,
                        "target_agent_node_id": target,
                    }
                ]
            )
            assert response.status_code == 200, response.text
            self.edges.discard((source, target))

        @invariant()
        def stored_graph_matches(self):
            if not hasattr(self, "agent"):
                return
            graph = client.get(f"/v1/agents/{self.agent}/graph").json()
            stored = {n["agent_node_id"]: n for n in graph["nodes"]}
            assert set(stored) == set(self.nodes)
            assert {
                (c["source_agent_node_id"], c["target_agent_node_id"]) for c in graph["connections"]
            } == self.edges
            for node, (_, params) in self.nodes.items():
                assert stored[node]["params_used"] == params

            @cache
            def layer(node):
                parents = [s for s, t in self.edges if t == node]
                return max((layer(p) + 1 for p in parents), default=0)

            rows = {}
            for node in sorted(self.nodes, key=lambda n: self.nodes[n][0]):
                rows.setdefault(layer(node), []).append(node)
            for x, members in rows.items():
                for y, node in enumerate(members):
                    assert stored[node]["position"] == {"x": x, "y": y}

    run_state_machine_as_test(
        GraphMachine,
        settings=settings(
            max_examples=12,
            stateful_step_count=12,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        ),
    )
