"""Querysets compiled to SQL once, then run again with new values: the lookups every upload makes.

Django compiles a queryset to SQL each time it runs. For a small lookup that is most of its cost: on a
2-core machine an API key with its clinic, by prefix, took 470 µs of CPU through the ORM and 25 µs as
the same SQL through a cursor. A DICOM upload made five such lookups, three of them inside its
transaction, which in the embedded mode holds SQLite's one write lock (bench/README.md, "eighth
machine").

:class:`PreparedQuery` takes a function that builds the queryset with :class:`Param` placeholders
where the values go. The first run on a database compiles it, with Django's own compiler, and keeps
the SQL, the columns' converters and the row-to-model populators, which are Django's as well. Each
run then fills in the values (prepared by the placeholder's field, as the ORM prepares them), runs the
SQL through the connection's cursor (query logging and wrappers still see it) and builds the same
model instances, ``select_related`` objects included, as iterating the queryset would.

Only what a compiled query cannot change between runs is allowed: the placeholders stand for values
(``filter(prefix=Param("prefix", field))``), not for field names, lookups or slices.

:class:`PreparedInsert` does the same for a new row: the upload's image and read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from django.db import connections
from django.db.models import Field, Model, QuerySet
from django.db.models.constants import OnConflict
from django.db.models.expressions import Expression
from django.db.models.query import (  # type: ignore[attr-defined]  # the stubs leave the second out
    ModelIterable,
    get_related_populators,
)
from django.db.models.sql import InsertQuery
from django.db.transaction import TransactionManagementError

M = TypeVar("M", bound=Model)


class Param(Expression):
    """A value of a prepared query, named, and prepared for the database as ``field`` prepares it."""

    def __init__(self, name: str, field: Field[Any, Any]) -> None:
        super().__init__(output_field=field)
        self.name = name
        self.value_field = field

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:
        return "%s", [self]  # replaced by the value at each run

    def __repr__(self) -> str:
        return f"Param({self.name!r})"


def field_param(model: type[Model], name: str) -> Param:
    """A placeholder for the model's field ``name`` (or its column's name: ``clinic_id``), named so."""
    field = model._meta.get_field(name)
    assert isinstance(field, Field)
    return Param(name, field)


@dataclass(frozen=True)
class _Compiled:
    alias: str
    sql: str
    params: tuple[Any, ...]  # constants, and Param placeholders where the values go
    names: frozenset[str]
    locks: bool  # select_for_update: a transaction is needed, as the ORM requires
    model: type[Model]
    init_list: list[str]
    start: int
    end: int
    col_count: int
    converters: dict[int, Any]
    apply_converters: Callable[..., Any]
    populators: list[Any]
    annotations: dict[str, int]


class PreparedQuery(Generic[M]):
    """``build()`` returns a queryset of model instances with :class:`Param` placeholders; ``all`` and
    ``first`` run it with a value for every placeholder, by name. The queryset is built and compiled on
    the first run, for the database it reads (there is one, ``default``)."""

    def __init__(self, build: Callable[[], QuerySet[M]]) -> None:
        self._build = build
        self._compiled: _Compiled | None = None

    def all(self, **values: Any) -> list[M]:
        compiled = self._compiled or self._compile()
        if set(values) != compiled.names:
            raise TypeError(f"values for {sorted(compiled.names)} expected, got {sorted(values)}")
        connection = connections[compiled.alias]
        _check_lock(connection, compiled.locks)
        params = [
            param.value_field.get_db_prep_value(values[param.name], connection)
            if isinstance(param, Param)
            else param
            for param in compiled.params
        ]
        with connection.cursor() as cursor:
            cursor.execute(compiled.sql, params)
            rows: Any = cursor.fetchall()
        if rows and len(rows[0]) > compiled.col_count:  # extra select columns, as the ORM trims them
            rows = [row[: compiled.col_count] for row in rows]
        if compiled.converters:
            rows = compiled.apply_converters(rows, compiled.converters)
        found = []
        for row in rows:
            values = row[compiled.start : compiled.end]
            obj = compiled.model.from_db(compiled.alias, compiled.init_list, values)
            for populator in compiled.populators:
                populator.populate(row, obj)
            for attr, position in compiled.annotations.items():
                setattr(obj, attr, row[position])
            found.append(obj)
        return found  # type: ignore[return-value]  # instances of the queryset's model

    def first(self, **values: Any) -> M | None:
        """The first instance, or None; the built queryset decides the order (and should be sliced)."""
        found = self.all(**values)
        return found[0] if found else None

    def _compile(self) -> _Compiled:
        """Django's own compile of the built queryset, kept (two threads may both compile it once)."""
        queryset = self._build()
        # Private attributes of QuerySet, absent from the stubs.
        related = queryset._known_related_objects  # type: ignore[attr-defined]
        if related or queryset._prefetch_related_lookups:  # type: ignore[attr-defined]
            raise ValueError("a prepared query cannot use prefetch_related or a related manager's objects")
        if queryset._iterable_class is not ModelIterable:
            raise ValueError("a prepared query must return model instances (not values or an aggregate)")
        alias = queryset.db
        query = queryset.query
        _check_lock(connections[alias], bool(query.select_for_update))
        compiler = query.get_compiler(using=alias)
        sql, params = compiler.as_sql()
        klass_info = compiler.klass_info
        select = compiler.select
        fields = [column[0] for column in select[: compiler.col_count]]
        if compiler.has_composite_fields(fields):
            raise ValueError("a prepared query cannot select a composite primary key")
        select_fields = klass_info["select_fields"]
        start, end = select_fields[0], select_fields[-1] + 1
        compiled = _Compiled(
            alias=alias,
            sql=sql,
            params=tuple(params),
            names=frozenset(param.name for param in params if isinstance(param, Param)),
            locks=bool(query.select_for_update),
            model=klass_info["model"],
            init_list=[column[0].target.attname for column in select[start:end]],
            start=start,
            end=end,
            col_count=compiler.col_count,
            converters=compiler.get_converters(fields),
            apply_converters=compiler.apply_converters,
            populators=get_related_populators(klass_info, select, alias),
            annotations=dict(compiler.annotation_col_map or {}),
        )
        self._compiled = compiled
        return compiled


def _check_lock(connection: Any, locks: bool) -> None:
    """The ORM's rule: ``select_for_update`` only inside a transaction, where the database has it."""
    if (
        locks
        and connection.features.has_select_for_update
        and connection.features.supports_transactions
        and connection.get_autocommit()
    ):
        raise TransactionManagementError("select_for_update cannot be used outside of a transaction.")


class PreparedInsert(Generic[M]):
    """One new row of ``model``, inserted as ``Model.save`` inserts it (each field's ``pre_save`` and
    ``get_db_prep_save``), from SQL that Django's compiler wrote once. With ``skip_conflicts``, a row
    that a unique constraint refuses is not written (``ON CONFLICT DO NOTHING``; SQLite's ``INSERT OR
    IGNORE``) and :meth:`insert` says so, without the savepoint that catching the error would need
    (two statements more, inside the transaction). For models without ``save`` overrides or
    ``pre_save``/``post_save`` receivers, which this does not call; the primary key must be set by the
    model (a UUID default), not by the database."""

    def __init__(self, model: type[M], *, skip_conflicts: bool = False) -> None:
        self.model = model
        self.skip_conflicts = skip_conflicts
        self.fields = [field for field in model._meta.local_concrete_fields if not field.generated]
        self._sql: dict[str, str] = {}

    def insert(self, obj: M, *, using: str = "default") -> bool:
        """Insert ``obj``; False when ``skip_conflicts`` and a unique constraint refused it."""
        if obj.pk is None:
            raise ValueError(f"{self.model.__name__}: a prepared insert needs the primary key set")
        connection = connections[using]
        sql = self._sql.get(using) or self._compile(obj, using)
        params = [field.get_db_prep_save(field.pre_save(obj, add=True), connection) for field in self.fields]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            written = bool(cursor.rowcount != 0)
        if written:
            obj._state.adding = False
            obj._state.db = using
        return written

    def _compile(self, obj: M, using: str) -> str:
        for field in self.fields:
            if hasattr(field, "get_placeholder"):
                raise ValueError(f"{field} has its own SQL placeholder: not for a prepared insert")
        query = InsertQuery(self.model, on_conflict=OnConflict.IGNORE if self.skip_conflicts else None)
        query.insert_values(self.fields, [obj])
        statements = query.get_compiler(using=using).as_sql()
        if len(statements) != 1 or len(statements[0][1]) != len(self.fields):
            raise ValueError(f"{self.model.__name__}: not one statement with a value per field")
        sql = str(statements[0][0])
        self._sql[using] = sql
        return sql
