"""What a GraphQL request asks, checked before anything runs: its documents (app.graph.reading
reads them from HTTP), persisted queries
(Apollo's automatic persisted queries: a SHA-256 in place of the document), and each document
parsed, validated against the schema and measured against the limits, then planned: the
operations it runs, each with its input.

Limits, each refused with a GraphQL error that names it: documents and operations per request
(GRAPHQL_MAX_OPERATIONS), lexical tokens per document (`MAX_TOKENS`: parsing stops there), the
depth of a selection (`MAX_DEPTH`), aliases (`MAX_ALIASES`) and the selections a document
expands to through its fragments (`MAX_SELECTIONS`: fragments that spread each other many times
cost the work they expand to, not the bytes they are written in).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any, Protocol

from cachetools import LRUCache
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    InlineFragmentNode,
    ListValueNode,
    NoSchemaIntrospectionCustomRule,
    ObjectValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    ValueNode,
    VariableNode,
    get_operation_ast,
    parse,
    specified_rules,
    validate,
)
from graphql.execution.values import VariableValues, get_variable_values
from graphql.utilities import value_from_ast_untyped

from app.cache import CachedValue
from app.graph.reading import GraphRequest, RequestError
from app.graph.shaping import Collector

__all__ = [
    "MAX_ALIASES",
    "MAX_DEPTH",
    "MAX_SELECTIONS",
    "MAX_TOKENS",
    "Documents",
    "Plan",
    "Planned",
]

MAX_TOKENS = 2_000  # the standard introspection query is ~300; ten operations with inline input ~600
MAX_DEPTH = 15  # the schema's own answers are 3 deep; the standard introspection query, 13
MAX_ALIASES = 30
MAX_SELECTIONS = 5_000  # fields and fragments visited, fragments expanded
PERSISTED_PREFIX = "graphql-apq:"  # its keys in L2, apart from every answer's (namespace:digest)
PERSISTED_SECONDS = 86_400
_CACHED_DOCUMENT = 16 * 1024  # documents longer than this (inline inputs) are prepared each time


@dataclass(frozen=True, slots=True)
class Planned:
    """One operation a document runs: the Query field, under its response key, with its input."""

    key: str
    field: str
    input: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Plan:
    """A document ready to run: parsed and valid, its variables coerced, its operations listed."""

    document: DocumentNode
    operation: OperationDefinitionNode
    variables: dict[str, Any]  # as sent
    coerced: VariableValues  # as the schema reads them
    operations: tuple[Planned, ...]


class Shared(Protocol):
    """Where persisted queries are shared by every worker: the cache's L2 (Redis or disk)."""

    def get(self, key: str) -> CachedValue | None: ...

    def set(self, key: str, value: CachedValue) -> bool: ...


class Documents:
    """Documents parsed and validated once per process (an LRU of their text), persisted queries
    by their SHA-256 (an LRU in front of the cache's L2, so a query registered with one worker is
    known to all; kept there `PERSISTED_SECONDS` from when a worker that did not know it was sent
    it; a hash unknown everywhere is asked for again, as the protocol says), and each request's
    plan."""

    def __init__(self, schema: GraphQLSchema, *, introspection: bool, shared: Shared | None = None):
        self.schema, self._shared = schema, shared
        self._rules = (*specified_rules, *(() if introspection else (NoSchemaIntrospectionCustomRule,)))
        self._prepared: LRUCache[str, DocumentNode | RequestError] = LRUCache(maxsize=512)
        self._persisted: LRUCache[str, str] = LRUCache(maxsize=8 * 1024 * 1024, getsizeof=len)

    def _recall(self, digest: str) -> str | None:
        found = self._persisted.get(digest)
        if found is None and self._shared is not None:
            value = self._shared.get(PERSISTED_PREFIX + digest)
            text = value.data.decode("utf-8", "replace") if value is not None else None
            if text is not None and hashlib.sha256(text.encode()).hexdigest() == digest:
                found = self._persisted[digest] = text
        return found

    def _remember(self, digest: str, text: str) -> None:
        if digest in self._persisted:
            return
        self._persisted[digest] = text
        if self._shared is not None:
            now = time.time()
            self._shared.set(PERSISTED_PREFIX + digest, CachedValue(text.encode(), now, now + PERSISTED_SECONDS))

    def text(self, request: GraphRequest) -> str:
        """The request's document, from its `query` or its persisted query's hash."""
        persisted = request.extensions.get("persistedQuery")
        if persisted is None:
            if not request.query:
                raise RequestError("no query: send `query`, or a persisted query's sha256Hash")
            return request.query
        if not isinstance(persisted, dict) or persisted.get("version") != 1:
            raise RequestError("Unsupported persisted query version", "PERSISTED_QUERY_NOT_SUPPORTED")
        digest = persisted.get("sha256Hash")
        if not isinstance(digest, str) or len(digest) != 64:
            raise RequestError("sha256Hash must be 64 hex digits")
        digest = digest.lower()
        if request.query is None:
            found = self._recall(digest)
            if found is None:  # 200: the client sends the document with its hash next (the protocol)
                raise RequestError("PersistedQueryNotFound", "PERSISTED_QUERY_NOT_FOUND", status=200)
            return found
        if hashlib.sha256(request.query.encode()).hexdigest() != digest:
            raise RequestError("provided sha does not match query", "BAD_REQUEST")
        if len(request.query) <= _CACHED_DOCUMENT:
            self._remember(digest, request.query)
        return request.query

    def plan(self, request: GraphRequest, method: str) -> Plan:
        """The request ready to run, or RequestError (GraphQLErrors of a document in `errors`)."""
        document = self._document(self.text(request))
        operation = get_operation_ast(document, request.operation_name)
        if operation is None:
            named = f"no operation named {request.operation_name}" if request.operation_name else None
            raise RequestError(named or "several operations: say which in operationName", "BAD_REQUEST")
        if method == "GET" and operation.operation != OperationType.QUERY:
            raise RequestError("a GET runs queries only", "BAD_REQUEST", status=405)
        coerced = get_variable_values(
            self.schema, operation.variable_definitions or (), request.variables, max_errors=20
        )
        if isinstance(coerced, list):
            raise _invalid(coerced, "BAD_USER_INPUT")
        operations = tuple(self._operations(document, operation, coerced))
        return Plan(document, operation, request.variables, coerced, operations)

    def _document(self, text: str) -> DocumentNode:
        found = self._prepared.get(text)
        if found is None:
            found = self._prepare(text)
            if len(text) <= _CACHED_DOCUMENT:
                self._prepared[text] = found
        if isinstance(found, RequestError):
            raise found
        return found

    def _prepare(self, text: str) -> DocumentNode | RequestError:
        try:
            document = parse(text, no_location=False, max_tokens=MAX_TOKENS)
        except GraphQLError as error:
            return _invalid([error], "GRAPHQL_PARSE_FAILED")
        errors = validate(self.schema, document, self._rules, max_errors=20)
        if errors:
            return _invalid(errors, "GRAPHQL_VALIDATION_FAILED")
        try:
            _measure(document)
        except RequestError as error:
            return error
        return document

    def _operations(
        self, document: DocumentNode, operation: OperationDefinitionNode, coerced: VariableValues
    ) -> list[Planned]:
        fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        planned = []
        for key, nodes in Collector(fragments, coerced).collect([operation.selection_set]).items():
            name = nodes[0].name.value  # one response key is one field (validation: same arguments)
            if not name.startswith("__"):  # __typename, __schema, __type: the shaping's, cost nothing
                planned.append(Planned(key, name, _input(nodes[0], coerced)))
        return planned


def _input(node: FieldNode, coerced: VariableValues) -> dict[str, Any]:
    """A field's `input`, as plain data: the document passed validation and the variables were
    coerced, so its literals are read as they are (an enum by its name, which is its value
    here) and pydantic checks the rest, as it does a REST body; an unset variable leaves no key."""
    (argument,) = (a for a in node.arguments or () if a.name.value == "input")
    return _literal(argument.value, coerced.coerced)  # type: ignore[no-any-return]


def _literal(node: ValueNode, variables: dict[str, Any]) -> Any:
    if isinstance(node, ObjectValueNode):
        return {
            field.name.value: _literal(field.value, variables)
            for field in node.fields
            if not isinstance(field.value, VariableNode) or field.value.name.value in variables
        }
    if isinstance(node, ListValueNode):
        return [_literal(item, variables) for item in node.values]
    return value_from_ast_untyped(node, variables)


def _measure(document: DocumentNode) -> None:
    """Refuse a document deeper than MAX_DEPTH, with more than MAX_ALIASES aliases, or expanding
    to more than MAX_SELECTIONS selections (validation has refused fragment cycles already)."""
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    counts = {"aliases": 0, "selections": 0}
    stack: list[tuple[SelectionSetNode, int]] = [
        (d.selection_set, 1) for d in document.definitions if isinstance(d, OperationDefinitionNode)
    ]
    while stack:
        selections, depth = stack.pop()
        for node in selections.selections:
            counts["selections"] += 1
            if counts["selections"] > MAX_SELECTIONS:
                raise RequestError(f"the document expands to more than {MAX_SELECTIONS} selections", "TOO_COMPLEX")
            if isinstance(node, FieldNode):
                if node.alias is not None:
                    counts["aliases"] += 1
                    if counts["aliases"] > MAX_ALIASES:
                        raise RequestError(f"more than {MAX_ALIASES} aliases", "TOO_MANY_ALIASES")
                if node.selection_set is not None:
                    if depth + 1 > MAX_DEPTH:
                        raise RequestError(f"selections nested deeper than {MAX_DEPTH}", "TOO_DEEP")
                    stack.append((node.selection_set, depth + 1))
            elif isinstance(node, InlineFragmentNode):
                stack.append((node.selection_set, depth))
            elif isinstance(node, FragmentSpreadNode) and node.name.value in fragments:
                stack.append((fragments[node.name.value].selection_set, depth))


def _invalid(errors: list[GraphQLError], code: str) -> RequestError:
    """A document's GraphQL errors as one refusal, each error kept for the answer."""
    return RequestError(errors[0].message, code, details="; ".join(e.message for e in errors)[:2000], errors=errors)
