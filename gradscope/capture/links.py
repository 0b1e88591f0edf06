"""Which returned state tensors came from which call, so the next call can continue the sequence.

When a watched part returns its final state, a hook on the returned tensor sees the gradient of
all its uses. If the user passes it back as the next call's initial state, the next call adds a
zero probe to it: the probe's gradient is exactly the part carried back into the previous call's
last step, and the rest (all uses minus that one) is the direct part. The user's tensors and
their gradients stay exactly as without gradscope. Entries hold only weak references, so a
forward that never sees a backward keeps nothing alive.
"""

import weakref


class Link:
    __slots__ = ("record", "state", "ref")

    def __init__(self, record, state, ref):
        self.record = record
        self.state = state
        self.ref = ref


class LinkTable:
    def __init__(self):
        self._links = {}

    def add(self, user_tensor, record, state):
        key = id(user_tensor)
        table = self._links

        def forget(_ref, key=key):
            link = table.get(key)
            if link is not None and link.ref is _ref:
                del table[key]

        self._links[key] = Link(record, state, weakref.ref(user_tensor, forget))

    def get(self, tensor):
        link = self._links.get(id(tensor))
        if link is None or link.ref() is not tensor:
            return None
        return link

    def find(self, states, module_name):
        """The links of ``states`` (a tensor or a tuple of tensors) if every one of them is a
        final state returned by the same earlier call of ``module_name`` in this step."""
        if states is None:
            return None
        items = states if isinstance(states, (tuple, list)) else (states,)
        links = [self.get(s) for s in items]
        if not links or any(link is None for link in links):
            return None
        record = links[0].record
        if any(link.record is not record for link in links) or record.module != module_name:
            return None
        return links

    def clear(self):
        self._links.clear()
