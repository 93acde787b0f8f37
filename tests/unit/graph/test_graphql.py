"""/graphql in one process (the offline template model): the schema and its checked-in SDL, the
same answers as REST, field selection, batching counted against the rate limit, the limits, bad
documents, persisted queries, introspection, keys and HTTP caching. Concurrency and upstream
failures against a real server: tests/integration/test_graphql_server.py."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from graphql import GraphQLList, GraphQLNonNull, GraphQLObjectType, get_introspection_query

from app.graph.documents import MAX_ALIASES, MAX_DEPTH, MAX_TOKENS
from app.graph.schema import FIELDS, build_schema, schema_sdl
from tests.support import make_app
from tests.unit.api.test_validation import VALID

ROOT = Path(__file__).resolve().parents[3]
GRAPHQL_JSON = "application/json"


def _selection(kind: Any) -> str:
    """Every leaf of an object type, nested: `{ a b { c } }`."""
    while isinstance(kind, GraphQLNonNull | GraphQLList):
        kind = kind.of_type
    if not isinstance(kind, GraphQLObjectType):
        return ""
    return "{ " + " ".join(f"{name} {_selection(field.type)}".strip() for name, field in kind.fields.items()) + " }"


def _document(field: str, alias: str = "") -> str:
    operation = FIELDS[field]
    kind = build_schema().query_type.fields[field].type  # type: ignore[union-attr]
    input_type = operation.model.__name__.removesuffix("Request") + "Input"
    return f"query Q($input: {input_type}!) {{ {alias}{field}(input: $input) {_selection(kind)} }}"


def _post(client: FlaskClient, body: Any, **headers: str) -> tuple[int, Any, Any]:
    response = client.post("/graphql", data=json.dumps(body), content_type=GRAPHQL_JSON, headers=headers)
    return response.status_code, response.get_json(), response.headers


def _ids_as_text(value: Any) -> Any:
    """REST sends a question's id as the model gave it; GraphQL's ID is text."""
    if isinstance(value, dict):
        return {k: (str(v) if k == "id" else _ids_as_text(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_ids_as_text(v) for v in value]
    return value


def test_the_checked_in_sdl_is_the_schema_built_from_the_models() -> None:
    checked_in = (ROOT / "docs" / "schema.graphql").read_text()
    assert checked_in == schema_sdl(), "the schema changed: run `make graphql-schema` and commit docs/schema.graphql"


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_each_operation_answers_what_its_rest_endpoint_answers(client: FlaskClient, field: str) -> None:
    operation = FIELDS[field]
    body = VALID[operation.path]
    rest = client.post(operation.path, json=body).get_json()
    status, answer, _ = _post(client, {"query": _document(field), "variables": {"input": body}})
    assert status == 200 and "errors" not in answer, answer
    assert answer["data"][field] == _ids_as_text(rest)


def test_field_selection_answers_only_what_was_asked_in_fewer_bytes(client: FlaskClient) -> None:
    body = VALID["/api/optimize"]
    rest = client.post("/api/optimize", json=body)
    query = "query($i: OptimizeInput!) { optimize(input: $i) { optimizedPrompt } }"
    graph = client.post("/graphql", json={"query": query, "variables": {"i": body}})
    assert graph.get_json() == {"data": {"optimize": {"optimizedPrompt": rest.get_json()["optimizedPrompt"]}}}
    assert len(graph.get_data()) < len(rest.get_data())


def test_one_operation_that_fails_leaves_the_others_answers(client: FlaskClient) -> None:
    query = (
        '{ good: generateQuestions(input: {prompt: "Plan a trip"}) { questions { title } }'
        ' bad: generateQuestions(input: {prompt: "  "}) { questions { title } } }'
    )
    status, answer, _ = _post(client, {"query": query})
    assert status == 200
    assert answer["data"]["good"]["questions"] and answer["data"]["bad"] is None
    (error,) = answer["errors"]
    assert error["path"] == ["bad"]
    assert error["extensions"] == {
        "code": "BAD_REQUEST",
        "status": 400,
        "details": "prompt: Value error, must not be blank",
    }


def test_a_failure_of_every_operation_answers_its_rest_status(client: FlaskClient) -> None:
    status, answer, _ = _post(
        client, {"query": '{ generateQuestions(input: {prompt: "\\u0000"}) { questions { id } } }'}
    )
    assert status == 400 and answer["data"] == {"generateQuestions": None}


@pytest.mark.parametrize(
    ("sizes", "allowed"),
    [
        ([3, 2], [True, True]),
        ([3, 3, 2], [True, False, True]),
        ([6], [False]),
        ([1, 1, 1, 1, 1, 1], [True] * 5 + [False]),
    ],
)
@pytest.mark.parametrize("batched", [False, True])
def test_every_operation_counts_against_the_rate_limit_all_or_none(
    sizes: list[int], allowed: list[bool], batched: bool
) -> None:
    client = make_app({"RATE_LIMIT": "5/minute"}).test_client()
    for number, (size, admitted) in enumerate(zip(sizes, allowed, strict=True)):
        aliases = [
            f'q{number}_{i}: generateQuestions(input: {{prompt: "p{number} {i}"}}) {{ provider }}' for i in range(size)
        ]
        body: Any = (
            [{"query": "{ " + a + " }"} for a in aliases] if batched else {"query": "{ " + " ".join(aliases) + " }"}
        )
        status, answer, headers = _post(client, body)
        if admitted:
            assert status == 200, answer
        else:
            assert status == 429 and int(headers["Retry-After"]) >= 1
            assert answer["errors"][0]["extensions"]["code"] == "TOO_MANY_REQUESTS"


def _aliases(count: int) -> str:
    return (
        "{ "
        + " ".join(f'a{i}: generateQuestions(input: {{prompt: "p{i}"}}) {{ provider }}' for i in range(count))
        + " }"
    )


def _fragment_bomb(levels: int) -> str:
    fragments = [f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }}" for i in range(levels)]
    fragments.append(f"fragment F{levels} on Query {{ __typename }}")
    return "{ ...F0 } " + " ".join(fragments)


def _deep(depth: int) -> str:
    nested = "name"
    for _ in range(depth - 2):
        nested = f"ofType {{ {nested} }}"
    return "{ __schema { queryType { fields { type { " + nested + " } } } } }"


LIMITED = [
    ("operations", {"query": _aliases(11)}, "TOO_MANY_OPERATIONS"),
    ("documents", [{"query": "{ __typename }"}] * 11, "TOO_MANY_OPERATIONS"),
    (
        "aliases",
        {"query": "{ " + " ".join(f"t{i}: __typename" for i in range(MAX_ALIASES + 1)) + " }"},
        "TOO_MANY_ALIASES",
    ),
    ("depth", {"query": _deep(MAX_DEPTH + 3)}, "TOO_DEEP"),
    ("tokens", {"query": "{ " + "__typename " * MAX_TOKENS + "}"}, "GRAPHQL_PARSE_FAILED"),
    ("fragments", {"query": _fragment_bomb(16)}, "TOO_COMPLEX"),
]


@pytest.mark.parametrize(("what", "body", "code"), LIMITED, ids=[case[0] for case in LIMITED])
def test_each_limit_refuses_with_a_code_that_names_it(client: FlaskClient, what: str, body: Any, code: str) -> None:
    status, answer, _ = _post(client, body)
    assert status == 400, answer
    codes = (
        [error["extensions"]["code"] for error in answer["errors"]]
        if isinstance(answer, dict)
        else [e["extensions"]["code"] for a in answer for e in a["errors"]]
    )
    assert code in codes


def test_limits_leave_the_standard_introspection_query_and_ten_operations_alone(client: FlaskClient) -> None:
    assert _post(client, {"query": get_introspection_query()})[0] == 200
    assert _post(client, {"query": _aliases(10)})[0] == 200


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


BAD = [
    ("syntax", {"query": "{ optimize(input: "}, 400, "GRAPHQL_PARSE_FAILED"),
    ("unknown field", {"query": "{ nope }"}, 400, "GRAPHQL_VALIDATION_FAILED"),
    (
        "unknown subfield",
        {"query": '{ generateQuestions(input: {prompt: "x"}) { nope } }'},
        400,
        "GRAPHQL_VALIDATION_FAILED",
    ),
    ("no selection", {"query": '{ generateQuestions(input: {prompt: "x"}) }'}, 400, "GRAPHQL_VALIDATION_FAILED"),
    (
        "wrong enum",
        {"query": '{ optimize(input: {prompt: "x", mode: fast}) { mode } }'},
        400,
        "GRAPHQL_VALIDATION_FAILED",
    ),
    (
        "missing variable",
        {"query": "query($p: String!) { generateQuestions(input: {prompt: $p}) { provider } }"},
        400,
        "BAD_USER_INPUT",
    ),
    (
        "variable of a wrong type",
        {"query": "query($p: String!) { generateQuestions(input: {prompt: $p}) { provider } }", "variables": {"p": 3}},
        400,
        "BAD_USER_INPUT",
    ),
    ("variables not an object", {"query": "{ __typename }", "variables": [1]}, 400, "BAD_REQUEST"),
    ("query not a string", {"query": 42}, 400, "BAD_REQUEST"),
    ("no query", {}, 400, "BAD_REQUEST"),
    ("empty batch", [], 400, "BAD_REQUEST"),
    ("a batch of numbers", [1, 2], 400, "BAD_REQUEST"),
    ("a mutation", {"query": "mutation { x }"}, 400, "GRAPHQL_VALIDATION_FAILED"),
    ("a subscription", {"query": "subscription { x }"}, 400, "GRAPHQL_VALIDATION_FAILED"),
    ("two operations, none named", {"query": "query A { __typename } query B { __typename }"}, 400, "BAD_REQUEST"),
    ("an unknown operation name", {"query": "query A { __typename }", "operationName": "B"}, 400, "BAD_REQUEST"),
    (
        "a fragment cycle",
        {"query": "{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }"},
        400,
        "GRAPHQL_VALIDATION_FAILED",
    ),
    (
        "deep JSON input",
        {
            "query": 'query($a: JSON) { detectSceneChange(input: {changedField: "a", newValue: "b",'
            ' fullPrompt: "c", affectedFields: $a}) { reasoning } }',
            "variables": {"a": {"k": _nested(500)}},
        },
        400,
        "BAD_REQUEST",
    ),
]


@pytest.mark.parametrize(("what", "body", "status", "code"), BAD, ids=[case[0] for case in BAD])
def test_bad_documents_get_graphql_errors_never_a_500(
    client: FlaskClient, what: str, body: Any, status: int, code: str | None
) -> None:
    got, answer, headers = _post(client, body)
    assert got == status, answer
    assert headers["Content-Type"] == GRAPHQL_JSON and answer["errors"]
    if code is not None:
        assert answer["errors"][0]["extensions"]["code"] == code


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"{", GRAPHQL_JSON, 400),
        (b"\xff", GRAPHQL_JSON, 400),
        (b"{}", "text/plain", 415),
        (b'{"query": "' + b"x" * (2 << 20) + b'"}', GRAPHQL_JSON, 413),
        (
            b'{"query": "{ __typename }", "variables": {"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
            GRAPHQL_JSON,
            400,
        ),
    ],
)
def test_bodies_that_are_not_graphql_requests_are_refused_in_the_graphql_shape(
    client: FlaskClient, body: bytes, content_type: str, status: int
) -> None:
    response = client.post("/graphql", data=body, content_type=content_type)
    assert response.status_code == status
    assert response.get_json()["errors"][0]["extensions"]["status"] == status


def test_persisted_queries_follow_the_automatic_protocol(client: FlaskClient) -> None:
    query = '{ generateQuestions(input: {prompt: "Plan a trip"}) { questions { title } } }'
    digest = hashlib.sha256(query.encode()).hexdigest()
    extensions = {"persistedQuery": {"version": 1, "sha256Hash": digest}}
    status, answer, _ = _post(client, {"extensions": extensions})
    assert status == 200 and answer["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    status, registered, _ = _post(client, {"query": query, "extensions": extensions})
    assert status == 200 and registered["data"]
    by_hash = client.get("/graphql", query_string={"extensions": json.dumps(extensions)})
    assert by_hash.status_code == 200 and by_hash.get_json() == registered
    wrong = {"persistedQuery": {"version": 1, "sha256Hash": "0" * 64}}
    assert _post(client, {"query": query, "extensions": wrong})[0] == 400
    version = {"persistedQuery": {"version": 2, "sha256Hash": digest}}
    assert (
        _post(client, {"extensions": version})[1]["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_SUPPORTED"
    )


@pytest.mark.parametrize(("setting", "open_"), [(None, True), ("true", True), ("false", False)])
def test_introspection_is_on_unless_turned_off(setting: str | None, open_: bool) -> None:
    client = make_app({} if setting is None else {"GRAPHQL_INTROSPECTION": setting}).test_client()
    status, answer, _ = _post(client, {"query": "{ __schema { queryType { name } } }"})
    assert (status == 200) is open_, answer
    assert _post(client, {"query": "{ __typename }"})[0] == 200  # not introspection


def test_graphql_can_be_turned_off() -> None:
    client = make_app({"GRAPHQL_ENABLED": "false"}).test_client()
    assert client.post("/graphql", json={"query": "{ __typename }"}).status_code == 404


@pytest.mark.parametrize("path", ["/graphql", "//graphql", "/graphql/", "/./graphql", "/GRAPHQL"])
def test_a_key_is_needed_however_the_path_is_spelled(path: str) -> None:
    client = make_app({"API_KEYS": "team:s3cret-key-123456"}).test_client()
    response = client.post(path, json={"query": "{ __typename }"})
    assert response.status_code in (401, 404, 308), path
    if response.status_code == 401:
        assert response.get_json()["errors"][0]["extensions"]["code"] == "UNAUTHORIZED"
    keyed = client.post("/graphql", json={"query": "{ __typename }"}, headers={"X-API-Key": "s3cret-key-123456"})
    assert keyed.status_code == 200 and keyed.headers["Cache-Control"] == "no-store"


def test_a_get_query_is_cacheable_by_the_edge_and_revalidates(client: FlaskClient) -> None:
    params = {"query": '{ generateQuestions(input: {prompt: "Plan a trip"}) { questions { title } } }'}
    first = client.get("/graphql", query_string=params)
    assert first.status_code == 200 and first.headers["Cache-Control"].startswith("public")
    again = client.get("/graphql", query_string=params, headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.get_data() == b""
    failed = client.get("/graphql", query_string={"query": '{ generateQuestions(input: {prompt: " "}) { provider } }'})
    assert failed.headers["Cache-Control"] == "no-store"
    assert client.post("/graphql", json=params).headers["Cache-Control"] == "no-store"


def test_operations_are_counted_by_field_and_outcome(client: FlaskClient) -> None:
    _post(client, {"query": _aliases(3)})
    _post(client, {"query": '{ generateQuestions(input: {prompt: " "}) { provider } }'})
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'graphql_operations_total{field="generateQuestions",status="200"} 3.0' in metrics
    assert 'graphql_operations_total{field="generateQuestions",status="400"} 1.0' in metrics


def test_a_persisted_query_registered_with_one_worker_is_known_to_the_others(tmp_path: Path) -> None:
    workers = [make_app({"CACHE_DIR": str(tmp_path)}).test_client() for _ in range(2)]
    query = '{ generateQuestions(input: {prompt: "shared hash"}) { provider } }'
    extensions = {"persistedQuery": {"version": 1, "sha256Hash": hashlib.sha256(query.encode()).hexdigest()}}
    assert _post(workers[0], {"query": query, "extensions": extensions})[0] == 200
    status, answer, _ = _post(workers[1], {"extensions": extensions})
    assert status == 200 and answer == {"data": {"generateQuestions": {"provider": "template"}}}
