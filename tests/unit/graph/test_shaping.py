"""app.graph.shaping answers what graphql-core's executor answers: a table of documents (aliases,
fragments, directives, repeated keys, __typename, failures, nulls) shaped both ways from the same
results, compared whole."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient
from graphql import GraphQLError, execute_sync, get_operation_ast, parse, validate
from graphql.execution.values import get_variable_values

from app.graph.schema import FIELDS, build_schema
from app.graph.shaping import shape
from tests.unit.api.test_validation import VALID

SCENE = 'detectSceneChange(input: {changedField: "a", newValue: "b", fullPrompt: "c"})'
DOCUMENTS: list[tuple[str, str, dict[str, Any]]] = [
    ("one field", '{ generateQuestions(input: {prompt: "x"}) { provider } }', {}),
    ("aliases and ids", '{ q: generateQuestions(input: {prompt: "x"}) { questions { id title field examples } } }', {}),
    (
        "fragments",
        'query { ...F } fragment F on Query { o: optimize(input: {prompt: "x", mode: code}) { ...M } }'
        " fragment M on OptimizeResponse { mode usage { inputTokens } }",
        {},
    ),
    ("inline fragments", '{ ... on Query { o: optimize(input: {prompt: "x", mode: code}) { ... { mode } } } }', {}),
    (
        "typename everywhere",
        '{ __typename o: optimize(input: {prompt: "x", mode: code}) { __typename usage { __typename } } }',
        {},
    ),
    (
        "directives",
        'query($yes: Boolean!, $no: Boolean = false) { o: optimize(input: {prompt: "x", mode: code})'
        " { mode @include(if: $yes) model @skip(if: $yes) provider @include(if: $no)"
        " usage @skip(if: false) { outputTokens } } }",
        {"yes": True},
    ),
    (
        "repeated keys merged",
        '{ o: optimize(input: {prompt: "x", mode: code}) { usage { inputTokens } }'
        ' o: optimize(input: {prompt: "x", mode: code}) { usage { outputTokens } mode } }',
        {},
    ),
    ("json and enums", f"{{ s: {SCENE} {{ isSceneChange confidence suggestedUpdates reasoning }} }}", {}),
    (
        "nullable fields",
        '{ e: getEnhancementSuggestions(input: {highlightedText: "a", fullPrompt: "b"})'
        " { suggestions { text explanation } isPlaceholder } }",
        {},
    ),
    (
        "a failed field",
        '{ bad: optimize(input: {prompt: "x", mode: code}) { mode }'
        ' o: optimize(input: {prompt: "y", mode: code}) { mode } }',
        {},
    ),
    (
        "introspection beside",
        '{ __schema { queryType { name } } o: optimize(input: {prompt: "x", mode: code}) { mode } }',
        {},
    ),
    (
        "a null where the schema says non-null",
        '{ broken: optimize(input: {prompt: "x", mode: code}) { mode model } }',
        {},
    ),
]


@pytest.fixture(scope="module")
def payloads() -> dict[str, Any]:
    from tests.support import make_app

    client: FlaskClient = make_app().test_client()
    return {
        name: client.post(operation.path, json=VALID[operation.path]).get_json() for name, operation in FIELDS.items()
    }


class _Results(dict[str, Any]):
    """Each response key's result, by the field its name starts with (o: optimize, ...), a
    failure for `bad`, a null where the schema says non-null for `broken`."""

    def __init__(self, payloads: dict[str, Any]) -> None:
        super().__init__()
        self._payloads = payloads

    def __missing__(self, key: str) -> Any:
        if key == "bad":
            return GraphQLError("Upstream model API error", extensions={"code": "BAD_GATEWAY", "status": 502})
        if key == "broken":
            return {**self._payloads["optimize"], "model": None}
        names = {"o": "optimize", "q": "generateQuestions", "s": "detectSceneChange", "e": "getEnhancementSuggestions"}
        return self._payloads[names.get(key, key)]


@pytest.mark.parametrize(("what", "text", "variables"), DOCUMENTS, ids=[d[0] for d in DOCUMENTS])
def test_shaping_answers_what_graphql_core_answers(
    payloads: dict[str, Any], what: str, text: str, variables: dict[str, Any]
) -> None:
    schema = build_schema()
    document = parse(text)
    assert validate(schema, document) == []
    operation = get_operation_ast(document)
    assert operation is not None
    coerced = get_variable_values(schema, operation.variable_definitions or (), variables)
    assert not isinstance(coerced, list), coerced
    results = _Results(payloads)
    ours = shape(schema, document, operation, coerced, variables, results)
    theirs = execute_sync(schema, document, root_value=results, variable_values=variables).formatted
    assert ours == dict(theirs)
    assert list(ours["data"] or {}) == list(theirs["data"] or {})  # the same order too
