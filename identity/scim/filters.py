"""SCIM filters compiled to SQL: parsed by scim2-models, walked here into a WHERE clause with
bound parameters, so a filtered list runs in PostgreSQL on its indexes and never loads the rows
it does not answer with.

Users (over `users AS u`): `id`, `userName`, `externalId`, `emails` / `emails.value`,
`emails[...]` (on `value`, `type`, `primary`), `active`, `displayName`, `meta.created`,
`meta.lastModified`. Agents (over `agents AS a JOIN users AS u`, its owner): `id`, `name`,
`externalId`, `displayName`, `agentType`, `active`, `owners.value`, `meta.created`,
`meta.lastModified`. Every comparison is false on an attribute a resource does not have (so
`not` of it is true), as RFC 7644 §3.4.2.2 reads an absent attribute.
"""

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from scim2_models import SCIMException, ScimFilter
from scim2_models.path import (
    AttrPath,
    CompareOperator,
    Comparison,
    FilterVisitor,
    LogicalExpr,
    LogicalOperator,
    Not,
    Present,
    ValuePath,
)

from identity.scim.agents import AGENT_SCHEMA
from identity.scim.errors import InvalidFilter
from identity.scim.users import USER_SCHEMA

Kind = Literal["string", "boolean", "datetime", "uuid"]


@dataclass(frozen=True)
class Column:
    """How an attribute is read in SQL, and what its values are."""

    sql: str
    kind: Kind = "string"
    case_exact: bool = False


EMAIL_VALUES = "scim_email_values(u.email, u.scim)"
EMAIL_TEXT = "scim_email_text(u.email, u.scim)"
_EMAILS = (
    "CASE jsonb_typeof(u.scim -> 'emails') WHEN 'array' THEN u.scim -> 'emails' "
    "ELSE jsonb_build_array(jsonb_build_object('value', u.email, 'primary', true)) END"
)
USER_COLUMNS = {
    "id": Column("u.id", "uuid"),
    "username": Column("lower(coalesce(u.user_name, u.slug))"),
    "externalid": Column("u.external_id", case_exact=True),
    "active": Column("u.active", "boolean"),
    "displayname": Column("lower(u.scim ->> 'displayName')"),
    "meta.created": Column("u.created_at", "datetime"),
    "meta.lastmodified": Column("u.updated_at", "datetime"),
}
EMAIL_ENTRY_COLUMNS = {
    "value": Column("lower(e ->> 'value')"),
    "type": Column("lower(e ->> 'type')"),
    "primary": Column("coalesce((e -> 'primary') = 'true'::jsonb, false)", "boolean"),
}
AGENT_COLUMNS = {
    "id": Column("a.id", case_exact=True),
    "name": Column("(a.slug || '@' || u.slug)"),
    "externalid": Column("a.external_id", case_exact=True),
    "displayname": Column("lower(a.display_name)"),
    "agenttype": Column("lower(a.scim ->> 'agentType')"),
    "active": Column("a.active", "boolean"),
    "owners.value": Column("a.user_id", "uuid"),
    "meta.created": Column("a.created_at", "datetime"),
    "meta.lastmodified": Column("a.updated_at", "datetime"),
}
_SQL_OPS = {"eq": "=", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _like(value: str, op: CompareOperator) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    match op:
        case CompareOperator.sw:
            return f"{escaped}%"
        case CompareOperator.ew:
            return f"%{escaped}"
    return f"%{escaped}%"


def _name(path: AttrPath, schema: str = USER_SCHEMA) -> str:
    if path.uri and path.uri.lower() != schema.lower():
        raise InvalidFilter(f"{path} is not an attribute of {schema}", attribute=str(path))
    return f"{path.attr}.{path.sub_attr}" if path.sub_attr else path.attr


@dataclass
class Compiler(FilterVisitor[str]):
    """One filter's WHERE clause; `params` holds the values it binds."""

    columns: dict[str, Column] = field(default_factory=lambda: USER_COLUMNS)
    params: dict[str, Any] = field(default_factory=dict)
    schema: str = USER_SCHEMA

    def bind(self, value: Any) -> str:
        name = f"f{len(self.params)}"
        self.params[name] = value
        return f":{name}"

    def column(self, path: AttrPath) -> Column:
        name = _name(path, self.schema)
        column = self.columns.get(name.lower())
        if column is None:
            raise InvalidFilter(f"filtering on {name} is not supported", attribute=name)
        return column

    def visit_comparison(self, node: Comparison) -> str:
        if self.columns is AGENT_COLUMNS and _name(node.attr_path, self.schema).lower() == "name":
            return self.agent_name(node)
        if self.columns is USER_COLUMNS and _name(node.attr_path, self.schema).lower() in (
            "emails",
            "emails.value",
        ):
            return self.email_value(node)
        return compare(self, self.column(node.attr_path), node)

    def visit_present(self, node: Present) -> str:
        name = _name(node.attr_path, self.schema).lower()
        if self.columns is USER_COLUMNS and name in ("emails", "emails.value"):
            return f"cardinality({EMAIL_VALUES}) > 0"
        column = self.column(node.attr_path)
        if column.kind == "string":
            return f"coalesce({column.sql} <> '', false)"
        return f"({column.sql} IS NOT NULL)"

    def visit_not(self, node: Not) -> str:
        # A comparison on an absent attribute is NULL, which a WHERE reads as false, and so
        # do AND and OR; only a negation must make it false first.
        return f"(NOT coalesce({self.visit(node.expr)}, false))"

    def visit_logical_expr(self, node: LogicalExpr) -> str:
        joiner = " AND " if node.op == LogicalOperator.and_ else " OR "
        return "(" + joiner.join(self.visit(term) for term in node.terms) + ")"

    def visit_value_path(self, node: ValuePath) -> str:
        if (
            self.columns is not USER_COLUMNS
            or _name(node.attr_path, self.schema).lower() != "emails"
        ):
            raise InvalidFilter(f"{node.attr_path}[...] is not supported", attribute=str(node))
        inner = Compiler(EMAIL_ENTRY_COLUMNS, self.params).visit(node.val_filter)
        return f"EXISTS (SELECT 1 FROM jsonb_array_elements({_EMAILS}) AS e WHERE {inner})"

    def agent_name(self, node: Comparison) -> str:
        """An agent's name, its key: `eq` compares the slugs apart, on their indexes."""
        column = self.columns["name"]
        if node.op != CompareOperator.eq or not isinstance(node.value, str):
            return compare(self, column, node)
        slug, at, user_slug = node.value.lower().partition("@")
        if not at:
            return "FALSE"
        return f"(a.slug = {self.bind(slug)} AND u.slug = {self.bind(user_slug)})"

    def email_value(self, node: Comparison) -> str:
        if not isinstance(node.value, str):
            raise InvalidFilter("emails.value is compared with a string", attribute="emails.value")
        value = self.bind(node.value)
        match node.op:
            case CompareOperator.eq:
                return f"({EMAIL_VALUES} @> ARRAY[lower({value})])"
            case CompareOperator.ne:
                return f"(NOT {EMAIL_VALUES} @> ARRAY[lower({value})])"
            case CompareOperator.co | CompareOperator.sw | CompareOperator.ew:
                near = self.bind(_like(node.value, CompareOperator.co))
                pattern = self.bind(_like(node.value, node.op))
                return (
                    f"({EMAIL_TEXT} LIKE lower({near}) AND EXISTS "
                    f"(SELECT 1 FROM unnest({EMAIL_VALUES}) AS v WHERE v LIKE lower({pattern})))"
                )
        sql_op = _SQL_OPS[node.op.value]
        return f"EXISTS (SELECT 1 FROM unnest({EMAIL_VALUES}) AS v WHERE v {sql_op} lower({value}))"


def _typed(column: Column, node: Comparison) -> Any:
    """The comparison's value as the column's type; InvalidFilter when it is not one."""
    value, name = node.value, str(node.attr_path)
    match column.kind:
        case "boolean" if isinstance(value, bool):
            return value
        case "datetime" if isinstance(value, str):
            try:
                return datetime.fromisoformat(value)
            except ValueError:
                pass
        case "string" | "uuid" if isinstance(value, str):
            return value
    raise InvalidFilter(f"{value!r} is not a value {name} can be compared with", attribute=name)


def _as_uuid(value: str, op: CompareOperator, sql: str) -> tuple[Any, str]:
    """An id compared as a UUID where it can be (on the primary key), else as text."""
    if op in (CompareOperator.eq, CompareOperator.ne):
        try:
            return uuid.UUID(value), sql
        except ValueError:
            pass
    return value, f"{sql}::text"


def compare(compiler: Compiler, column: Column, node: Comparison) -> str:
    """One comparison, as its index reads it: NULL where the attribute is absent."""
    value, op, name = _typed(column, node), node.op, str(node.attr_path)
    if column.kind == "boolean" and op not in (CompareOperator.eq, CompareOperator.ne):
        raise InvalidFilter(f"{name} is a boolean: only eq, ne and pr apply", attribute=name)
    if column.kind == "datetime" and op in (
        CompareOperator.co,
        CompareOperator.sw,
        CompareOperator.ew,
    ):
        raise InvalidFilter(f"{name} is a dateTime: co, sw and ew do not apply", attribute=name)
    sql = column.sql
    if column.kind == "uuid":
        value, sql = _as_uuid(value, op, sql)
    param = compiler.bind(value)
    if column.kind == "string" and not column.case_exact:
        param = f"lower({param})"
    match op:
        case CompareOperator.ne:
            return f"({sql} IS DISTINCT FROM {param})"
        case CompareOperator.co | CompareOperator.sw | CompareOperator.ew:
            pattern = compiler.bind(_like(value, op))
            pattern = pattern if column.case_exact else f"lower({pattern})"
            return f"({sql} LIKE {pattern})"
    return f"({sql} {_SQL_OPS[op.value]} {param})"


def where(expression: str | None, resource: str = "User") -> tuple[str, dict[str, Any]]:
    """The WHERE clause and parameters of a filter on users (over `users AS u`) or agents
    (`agents AS a JOIN users AS u`); TRUE for none."""
    if expression is None or not expression.strip():
        return "TRUE", {}
    try:
        tree = ScimFilter(expression).ast
    except (SCIMException, ValueError) as exc:
        raise InvalidFilter(f"the filter is not valid: {exc}", filter=expression) from None
    compiler = Compiler() if resource == "User" else Compiler(AGENT_COLUMNS, schema=AGENT_SCHEMA)
    return compiler.visit(tree), compiler.params
