"""ONNX graph housekeeping: node order, the full checker, simplification, and what a variant needs to run.

Every function reads subgraphs too (a Loop's body, an If's branches): tf2onnx writes
recurrent layers it cannot map onto LSTM/GRU as Loops.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Any

from modelyard.exporters.convert import ExportError

# The domains every ONNX runtime implements; anything else (ONNX Runtime's com.microsoft
# contrib ops, such as DynamicQuantizeLSTM) ties a variant to one runtime.
STANDARD_DOMAINS = frozenset({"ai.onnx", "ai.onnx.ml"})


def _subgraphs(node: Any) -> Iterator[Any]:
    from onnx import AttributeProto

    for attr in node.attribute:
        if attr.type == AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == AttributeProto.GRAPHS:
            yield from attr.graphs


def all_nodes(graph: Any) -> Iterator[Any]:
    for node in graph.node:
        yield node
        for sub in _subgraphs(node):
            yield from all_nodes(sub)


def reads(node: Any) -> set[str]:
    """What a node reads: its inputs, and the outer-scope names its subgraphs use."""
    names = {i for i in node.input if i}
    for sub in _subgraphs(node):
        local = {v.name for v in (*sub.input, *sub.initializer)} | {o for n in sub.node for o in n.output}
        names |= {name for n in sub.node for name in reads(n)} - local
    return names


def sort_topologically(graph: Any) -> None:
    """Put every node after the producers of what it reads (ONNX requires it; ONNX Runtime does not check),
    keeping the original order wherever it is already valid."""
    from onnx import NodeProto

    for node in graph.node:
        for sub in _subgraphs(node):
            sort_topologically(sub)
    nodes = list(graph.node)
    producer = {out: i for i, node in enumerate(nodes) for out in node.output if out}
    users: list[list[int]] = [[] for _ in nodes]
    waiting = [0] * len(nodes)
    for i, node in enumerate(nodes):
        for j in {producer[name] for name in reads(node) if name in producer}:
            users[j].append(i)
            waiting[i] += 1
    ready = [i for i, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for user in users[i]:
            waiting[user] -= 1
            if waiting[user] == 0:
                heapq.heappush(ready, user)
    if len(order) < len(nodes):
        stuck = next(nodes[i].name for i, count in enumerate(waiting) if count > 0)
        raise ExportError(f"the ONNX graph has a cycle through node '{stuck}'.")
    copies = []
    for i in order:
        copy = NodeProto()
        copy.CopyFrom(nodes[i])
        copies.append(copy)
    del graph.node[:]
    graph.node.extend(copies)


def drop_unused_domains(model: Any) -> None:
    """ONNX Runtime's optimizer declares all of its domains in the file; keep those a node uses."""
    used = {n.domain or "ai.onnx" for n in all_nodes(model.graph)}
    for function in model.functions:
        used |= {function.domain} | {n.domain or "ai.onnx" for n in function.node}
    kept = [o for o in model.opset_import if (o.domain or "ai.onnx") in used | {"ai.onnx"}]
    del model.opset_import[:]
    model.opset_import.extend(kept)


def simplify(model: Any) -> Any:
    """onnxslim: constant-folds shape computations (Shape -> Gather -> Concat -> Reshape under a dynamic
    batch), drops dead nodes and fuses simple patterns; the caller checks parity afterwards."""
    import onnxslim

    slimmed = onnxslim.slim(model)
    if slimmed is None:
        raise ExportError("onnxslim returned no model.")
    return slimmed


def tidy(model: Any) -> Any:
    """What every variant gets before it is written: nodes in order, only the domains it uses declared."""
    sort_topologically(model.graph)
    drop_unused_domains(model)
    return model


def check(path: Any) -> str | None:
    """None when the file passes ONNX's full checker (with strict shape inference), else the checker's first line."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        text = " ".join(str(err).split())
        return text[:300] or type(err).__name__
    return None


def runtime_needs(model: Any) -> dict[str, Any]:
    """The operator domains a model uses (with the opset version it declares for each) and their ops."""
    declared = {(o.domain or "ai.onnx"): o.version for o in model.opset_import}
    ops: dict[str, set[str]] = {}
    count = 0
    for node in all_nodes(model.graph):
        ops.setdefault(node.domain or "ai.onnx", set()).add(node.op_type)
        count += 1
    return {
        "nodes": count,
        "domains": {domain: declared.get(domain) for domain in sorted(ops)},
        "ops": {domain: sorted(names) for domain, names in sorted(ops.items())},
        "standard_ops_only": set(ops) <= STANDARD_DOMAINS,
    }


def nonstandard(needs: dict[str, Any]) -> str:
    """'com.microsoft: DynamicQuantizeLSTM' for the ops outside the standard domains, '' when there are none."""
    return "; ".join(
        f"{domain}: {', '.join(names)}" for domain, names in needs["ops"].items() if domain not in STANDARD_DOMAINS
    )
