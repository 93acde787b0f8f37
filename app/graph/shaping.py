"""A document's answer shaped from its operations' results: what graphql-core's executor does
for this schema, at a fraction of its cost.

Every Query field is resolved before shaping (app.graph.endpoint runs them at once), and below
Query the schema is plain data — objects, lists, scalars, enums; no arguments, no interfaces or
unions, no resolvers — so an answer is the result projected through the selection: fields by
response key in document order (fragments and @skip/@include applied, repeated keys merged),
each leaf serialized by its GraphQL type (an ID becomes text), `__typename` its object's name.
graphql-core's executor cost ~180 us per operation here (about 10 us a field), four times a
cached answer's whole path through the gateway; this costs a few microseconds a field. Its
answers are graphql-core's, compared document by document in tests/unit/graph/test_shaping.py;
a value it cannot shape (null where the schema says non-null) falls back to graphql-core.
"""

from __future__ import annotations

from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLIncludeDirective,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLSkipDirective,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    execute_sync,
)
from graphql.execution.values import VariableValues, get_directive_values

__all__ = ["Collector", "shape"]


class _Unshapable(Exception):
    """A value the fast path leaves to graphql-core (a null where the schema says non-null)."""


class Collector:
    """The fields a selection asks for, by response key: fragments and @skip/@include applied."""

    def __init__(self, fragments: dict[str, FragmentDefinitionNode], coerced: VariableValues) -> None:
        self._fragments, self._coerced = fragments, coerced

    def collect(self, selection_sets: list[SelectionSetNode]) -> dict[str, list[FieldNode]]:
        """Fields by response key, in document order, across every selection set given."""
        found: dict[str, list[FieldNode]] = {}
        seen: set[str] = set()  # a fragment spread twice is collected once
        for selections in selection_sets:
            self._collect(selections, found, seen)
        return found

    def _collect(self, selections: SelectionSetNode, found: dict[str, list[FieldNode]], seen: set[str]) -> None:
        for node in selections.selections:
            if not self._included(node):
                continue
            if isinstance(node, FieldNode):
                found.setdefault(node.alias.value if node.alias else node.name.value, []).append(node)
            elif isinstance(node, InlineFragmentNode):
                self._collect(node.selection_set, found, seen)
            elif isinstance(node, FragmentSpreadNode) and node.name.value not in seen:
                seen.add(node.name.value)
                self._collect(self._fragments[node.name.value].selection_set, found, seen)

    def _included(self, node: Any) -> bool:
        if not node.directives:
            return True
        skip = get_directive_values(GraphQLSkipDirective, node, self._coerced)
        include = get_directive_values(GraphQLIncludeDirective, node, self._coerced)
        return not (skip and skip.get("if")) and not (include and not include.get("if"))


class _Shaper(Collector):
    """Projects results through a selection (see the module's docstring)."""

    def object(self, kind: GraphQLObjectType, value: dict[str, Any], nodes: list[FieldNode]) -> dict[str, Any]:
        sets = [node.selection_set for node in nodes if node.selection_set is not None]
        shaped: dict[str, Any] = {}
        for key, fields in self.collect(sets).items():
            name = fields[0].name.value
            if name == "__typename":
                shaped[key] = kind.name
            else:
                shaped[key] = self.value(kind.fields[name].type, value.get(name), fields)
        return shaped

    def value(self, kind: Any, value: Any, nodes: list[FieldNode]) -> Any:
        if isinstance(kind, GraphQLNonNull):
            if value is None:
                raise _Unshapable()
            kind = kind.of_type
        if value is None:
            return None
        if isinstance(kind, GraphQLList):
            return [self.value(kind.of_type, item, nodes) for item in value]
        if isinstance(kind, GraphQLObjectType):
            return self.object(kind, value, nodes)
        return kind.serialize(value)


def shape(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    coerced: VariableValues,
    variables: dict[str, Any],
    results: dict[str, Any],
) -> dict[str, Any]:
    """`{"data": ..., "errors": [...]}` for `operation`, whose Query fields' results (an answer,
    or the GraphQLError it ended with) are in `results` by response key."""
    query = schema.query_type
    assert query is not None
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    shaper = _Shaper(fragments, coerced)
    data: dict[str, Any] = {}
    errors: list[dict[str, Any]] = []
    try:
        for key, nodes in shaper.collect([operation.selection_set]).items():
            name = nodes[0].name.value
            if name.startswith("__"):
                data[key] = query.name if name == "__typename" else None
                if name != "__typename":  # __schema, __type: introspection, graphql-core's work
                    raise _Unshapable()
                continue
            outcome = results[key]
            if isinstance(outcome, GraphQLError):
                data[key] = None
                located = GraphQLError(outcome.message, nodes[:1], path=[key], extensions=outcome.extensions)
                errors.append(dict(located.formatted))
                continue
            data[key] = shaper.value(query.fields[name].type, outcome, nodes)
    except _Unshapable:
        named = operation.name.value if operation.name else None
        executed = execute_sync(schema, document, root_value=results, variable_values=variables, operation_name=named)
        return dict(executed.formatted)
    return {"data": data, "errors": errors} if errors else {"data": data}
