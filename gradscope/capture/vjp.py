"""A vector-Jacobian product through one step of a user's graph, run without its hooks.

``scope.track`` needs the part of dL/dh_t that comes back through the next tracked state:
J^T v with J = d h_{t+1} / d h_t and v = dL/dh_{t+1}. ``torch.autograd.grad`` would compute it,
but it runs every tensor hook on the way, the user's own ones and ``retain_grad`` included (a
retained ``h_t.grad`` would then hold carried + total). Calling the graph's nodes directly runs
none of them, so this walks the nodes between the two states in topological order, as the
engine does (summing into each node's inputs, reducing broadcast gradients to the input's shape).
It is called from the hook of h_{t+1} while the main backward pass waits there: nothing below
h_{t+1} has run yet, so every saved tensor it needs is still in place.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch

# AccumulateGrad nodes (leaves) carry this sequence number; nothing is created "after" them
_LEAF_SEQUENCE = 2 ** 64 - 1


def _sequence(node) -> int:
    return node._sequence_nr()


def step_vjp(start, grad: torch.Tensor, targets: Sequence, stops: Sequence = ()) -> List[Optional[torch.Tensor]]:
    """The gradient ``grad`` at the edge ``start`` sends back to each edge of ``targets``.

    Args:
        start: the gradient edge (``torch.autograd.graph.get_gradient_edge``) of the later state.
        grad: dL/d(later state), as the hook of that state received it.
        targets: gradient edges of the earlier states.
        stops: gradient edges not to go through (the later step's other states: what reaches
            them is counted when their own gradient is complete).

    Returns:
        One tensor per target (None where no path from ``start`` reaches it).
    """
    target_index = {(id(edge.node), edge.output_nr): i for i, edge in enumerate(targets)}
    stop_edges = {(id(edge.node), edge.output_nr) for edge in stops}
    target_nodes = {id(edge.node) for edge in targets}
    # a node created before every target cannot depend on any of them: the walk ends there
    bound = min((_sequence(e.node) for e in targets if _sequence(e.node) != _LEAF_SEQUENCE), default=0)
    order = _nodes_between(start.node, target_index, stop_edges, target_nodes, bound)
    results: List[Optional[torch.Tensor]] = [None] * len(targets)
    if not order:
        return results
    on_path = {id(node) for node in order}
    buffers = {id(start.node): {start.output_nr: grad}}
    with torch.no_grad():
        for node in order:
            buffer = buffers.pop(id(node), None)
            if buffer is None:
                continue
            grads = [buffer.get(i) for i in range(len(node._input_metadata))]
            # ATen's nodes are callable; a custom autograd.Function's node runs by .apply, or by
            # its pure_backward where its backward also records (the exact route's step nodes)
            pure = getattr(getattr(type(node), "_forward_cls", None), "pure_backward", None)
            if pure is not None:
                outputs = pure(node, *grads)
            else:
                outputs = node(*grads) if callable(node) else node.apply(*grads)
            if isinstance(outputs, torch.Tensor) or outputs is None:
                outputs = (outputs,)
            for (child, nr), g in zip(node.next_functions, outputs):
                if child is None or g is None:
                    continue
                key = (id(child), nr)
                if key in stop_edges:
                    continue
                g = _like_input(g, child._input_metadata[nr])
                if key in target_index:
                    i = target_index[key]
                    results[i] = g if results[i] is None else results[i] + g
                elif id(child) in on_path:
                    slot = buffers.setdefault(id(child), {})
                    slot[nr] = g if nr not in slot else slot[nr] + g
    return results


def _like_input(grad, meta):
    """What the engine does to a node's output gradient before passing it on (validate_outputs)."""
    if tuple(grad.shape) != tuple(meta.shape):
        grad = grad.sum_to_size(meta.shape)
    if grad.dtype != meta.dtype:
        grad = grad.to(meta.dtype)
    return grad


def _nodes_between(root, target_index, stop_edges, target_nodes, bound):
    """The nodes from which a target edge is reachable, root first, in topological order
    (every node before the nodes it sends gradients to). Iterative: graphs can be deep."""
    reaches = {}  # id(node) -> bool, once its subtree is done
    seen = [root]  # keeps every visited node's Python object alive, so that no id is reused
    post_order = []
    stack = [[root, 0, False]]
    while stack:
        frame = stack[-1]
        node, i = frame[0], frame[1]
        nexts = node.next_functions
        if i < len(nexts):
            frame[1] += 1
            child, nr = nexts[i]
            if child is None or (id(child), nr) in stop_edges:
                continue
            if (id(child), nr) in target_index:
                frame[2] = True
                continue
            if id(child) in target_nodes:
                continue  # another output of a target's node: what lies below it is older
            known = reaches.get(id(child))
            if known is not None:
                frame[2] = frame[2] or known
                continue
            seen.append(child)
            sequence = _sequence(child)
            if sequence == _LEAF_SEQUENCE or sequence < bound:
                reaches[id(child)] = False
                continue
            reaches[id(child)] = False  # provisional: the graph is acyclic
            stack.append([child, 0, False])
        else:
            stack.pop()
            reaches[id(node)] = frame[2]
            if frame[2]:
                post_order.append(node)
                if stack:
                    stack[-1][2] = True
    return post_order[::-1]
