"""A conversation as a tree: every message has one parent, the system root has none.

Current chat-ui describes each message by its ``ancestors`` (ids from the root
to its parent) and ``children``; storage keeps only the parent of each. These
functions turn one into the other, and answer what the routes and the page
ask of a tree: the path to a message, the newest branch under one, its
siblings. Pure code: the server and the client share it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

__all__ = ["Node", "Tree"]


class Node(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def parent_id(self) -> str | None: ...


class Tree:
    """The messages of one conversation, given parents first (creation order guarantees it)."""

    def __init__(self, nodes: Iterable[Node]) -> None:
        self.parent: dict[str, str | None] = {}
        self.children: dict[str, list[str]] = {}
        self.root: str | None = None
        for node in nodes:
            self.parent[node.id] = node.parent_id
            self.children[node.id] = []
            if node.parent_id is None:
                self.root = self.root or node.id
            elif node.parent_id in self.children:
                self.children[node.parent_id].append(node.id)

    def __contains__(self, message_id: object) -> bool:
        return message_id in self.parent

    def __len__(self) -> int:
        return len(self.parent)

    def ancestors(self, message_id: str) -> list[str]:
        """The ids from the root to the message's parent, in that order."""
        path: list[str] = []
        current = self.parent.get(message_id)
        while current is not None:
            path.append(current)
            current = self.parent.get(current)
        path.reverse()
        return path

    def path(self, message_id: str) -> list[str]:
        """The ids from the root to the message itself."""
        return [*self.ancestors(message_id), message_id]

    def newest_leaf(self, message_id: str) -> str:
        """The leaf reached from a message by always taking its newest child: the branch a person
        switching to that message expects to see continue."""
        while self.children.get(message_id):
            message_id = self.children[message_id][-1]
        return message_id

    def subtree(self, message_id: str) -> set[str]:
        """The message and all its descendants."""
        found, todo = set(), [message_id]
        while todo:
            current = todo.pop()
            found.add(current)
            todo.extend(self.children.get(current, ()))
        return found

    def siblings(self, message_id: str) -> Sequence[str]:
        """The children of the message's parent, the message included, oldest first."""
        parent = self.parent.get(message_id)
        return [message_id] if parent is None else self.children[parent]

    def leaf_after_delete(self, message_id: str, active: str) -> str:
        """Where the active branch goes when ``message_id`` and its descendants are deleted: it stays
        if it did not pass there; else to the newest remaining sibling's branch, or to the parent."""
        if message_id not in self.path(active):
            return active
        parent = self.parent.get(message_id)
        assert parent is not None, "the root is never deleted"
        others = [sibling for sibling in self.children[parent] if sibling != message_id]
        return self.newest_leaf(others[-1]) if others else parent
