"""The GraphQL schema, generated from the pydantic models of the six operations
(app.services.operations): each operation is a field of `Query` whose `input` argument is its
REST body and whose type is its REST answer, so the two doors can never drift. The SDL is
checked in (docs/schema.graphql) and a test fails when it differs from what this module builds.

Types map as a client would expect: `str` → String, `int` → Int, `bool` → Boolean, a `Literal`
→ an enum (named once however many models use it), `int | str` → ID, a free-form dict → the
`JSON` scalar, `list[X]` → `[X!]!`, a nested model → an input or object type; `X | None` is
nullable, and an input field with a default may be left out. Limits a field's validator enforces
(lengths, not blank) are in its description; the validation itself stays pydantic's, on the
same models REST uses, so both doors refuse the same input with the same words.
"""

from __future__ import annotations

import functools
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

from graphql import (
    GraphQLArgument,
    GraphQLBoolean,
    GraphQLEnumType,
    GraphQLEnumValue,
    GraphQLField,
    GraphQLID,
    GraphQLInputField,
    GraphQLInputObjectType,
    GraphQLInt,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLResolveInfo,
    GraphQLScalarType,
    GraphQLSchema,
    GraphQLString,
    print_schema,
)
from pydantic import BaseModel

from app.schemas.answers import SceneChangeAnswer
from app.schemas.requests import ElementType, Mode, QuestionField
from app.services.operations import OPERATIONS, Operation

__all__ = ["FIELDS", "JSON", "build_schema", "schema_sdl"]

# Query's field name → the operation it runs: optimize, generateQuestions, ...
FIELDS: dict[str, Operation[Any]] = {operation.operation_id: operation for operation in OPERATIONS.values()}
# Literals with a name of their own; any other is named after its model and field.
_ENUM_NAMES = {
    get_args(Mode): "Mode",
    get_args(ElementType): "ElementType",
    get_args(QuestionField): "QuestionField",
    get_args(SceneChangeAnswer.model_fields["confidence"].annotation): "Confidence",
}


def _json_literal(node: Any, variables: dict[str, Any] | None = None) -> Any:
    from graphql import value_from_ast_untyped

    return value_from_ast_untyped(node, variables)


JSON = GraphQLScalarType(
    "JSON",
    description="Any JSON value, as the REST endpoint takes or gives it (e.g. affectedFields, suggestedUpdates)",
    serialize=lambda value: value,
    parse_value=lambda value: value,
    parse_literal=_json_literal,
)


class _Builder:
    """Turns pydantic models into GraphQL types, each model and enum built once."""

    def __init__(self) -> None:
        self._enums: dict[tuple[Any, ...], GraphQLEnumType] = {}
        self._inputs: dict[type[BaseModel], GraphQLInputObjectType] = {}
        self._outputs: dict[type[BaseModel], GraphQLObjectType] = {}

    def input(self, model: type[BaseModel]) -> GraphQLInputObjectType:
        if model not in self._inputs:
            name = model.__name__.removesuffix("Request") + "Input"
            properties = model.model_json_schema(mode="validation").get("properties", {})
            self._inputs[model] = GraphQLInputObjectType(
                name,
                lambda: {
                    key: GraphQLInputField(
                        self._type(info.annotation, model, key, output=False, required=info.is_required()),
                        description=_limits(properties.get(key, {})),
                    )
                    for key, info in model.model_fields.items()
                },
                description=(model.__doc__ or "").strip() or None,
            )
        return self._inputs[model]

    def output(self, model: type[BaseModel]) -> GraphQLObjectType:
        if model not in self._outputs:
            self._outputs[model] = GraphQLObjectType(
                model.__name__,
                lambda: {
                    key: GraphQLField(self._type(info.annotation, model, key, output=True, required=True))
                    for key, info in model.model_fields.items()
                },
            )
        return self._outputs[model]

    def _type(self, annotation: Any, model: type[BaseModel], key: str, *, output: bool, required: bool) -> Any:
        """The GraphQL type of a field; non-null when required and not `| None`."""
        inner, nullable = _unwrap(annotation)
        found = self._named(inner, model, key, output=output)
        return found if nullable or not required else GraphQLNonNull(found)

    def _named(self, annotation: Any, model: type[BaseModel], key: str, *, output: bool) -> Any:
        origin = get_origin(annotation)
        if origin is list:
            (item,) = get_args(annotation)
            return GraphQLList(self._type(item, model, key, output=output, required=True))
        if origin is Literal:
            return self._enum(get_args(annotation), f"{model.__name__}{key[:1].upper()}{key[1:]}")
        if origin is dict:
            return JSON
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return self.output(annotation) if output else self.input(annotation)
        if origin in (Union, types.UnionType) and set(get_args(annotation)) == {int, str}:
            return GraphQLID
        scalars = {str: GraphQLString, int: GraphQLInt, bool: GraphQLBoolean}
        if annotation in scalars:
            return scalars[annotation]
        raise TypeError(f"{model.__name__}.{key}: no GraphQL type for {annotation!r}")

    def _enum(self, values: tuple[Any, ...], fallback: str) -> GraphQLEnumType:
        if values not in self._enums:
            name = _ENUM_NAMES.get(values, fallback)
            self._enums[values] = GraphQLEnumType(name, {value: GraphQLEnumValue(value) for value in values})
        return self._enums[values]


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(the type inside Annotated and Optional, whether None is allowed)."""
    while get_origin(annotation) is typing.Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, types.UnionType):
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(members) < len(get_args(annotation)):
            inner, _ = _unwrap(members[0] if len(members) == 1 else Union[tuple(members)])  # noqa: UP007
            return inner, True
    return annotation, False


def _limits(schema: dict[str, Any]) -> str | None:
    """What a field's validators enforce, from its JSON schema: `1 to 10000 characters, not blank`."""
    options = [schema, *schema.get("anyOf", ())]
    for option in options:
        if "maxLength" in option:
            low = option.get("minLength", 0)
            blank = ", not blank" if low else ""
            return f"{low} to {option['maxLength']} characters{blank}"
    described = [option["description"] for option in options if "description" in option]
    return described[0] if described else None


@functools.cache
def build_schema() -> GraphQLSchema:
    """The schema of the six operations, built once per process (it holds no state)."""
    builder = _Builder()
    query = GraphQLObjectType(
        "Query",
        {
            # Nullable: one operation that fails leaves the others' answers in `data`.
            name: GraphQLField(
                builder.output(operation.reply),
                args={"input": GraphQLArgument(GraphQLNonNull(builder.input(operation.model)))},
                resolve=_answered,
                description=f"{operation.summary} (the same as {operation.path})",
            )
            for name, operation in FIELDS.items()
        },
    )
    return GraphQLSchema(query=query)


def _answered(root: dict[str, Any], info: GraphQLResolveInfo, **_: Any) -> Any:
    """A Query field's value: its operation's answer, run before execution (app.graph.endpoint)
    and kept under its response key, or the error it ended with."""
    outcome = root[str(info.path.key)]
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def schema_sdl() -> str:
    """The schema as SDL: what docs/schema.graphql holds."""
    return print_schema(build_schema()) + "\n"
