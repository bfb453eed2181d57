"""Core statements compiled once per dialect and run on the driver's cursor.

A status report is five or six small statements. Through ``Connection.execute`` each
one pays SQLAlchemy's per-statement work: the compiled-cache lookup, an execution
context, the parameters processed through the compiled statement, the result wrapped
in a ``CursorResult`` (in the profile of the drain, more than the database's own work).
:class:`Prepared` does that work once: the statement's SQL for the connection's dialect,
the order of its parameters and each parameter's and column's type processor (the same
ones SQLAlchemy would apply, so values are stored and read back exactly as through the
ORM). Each execution then binds, runs on the DBAPI cursor and converts the rows.

Driver errors are raised as SQLAlchemy's (``DBAPIError.instance``), and a connection
the driver lost is invalidated, as ``Connection.execute`` would do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Connection, exc
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

Processor = Callable[[Any], Any]


class Prepared:
    """One statement ready to run on connections of ``dialect``."""

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
        self.sql: str = compiled.string
        self._dialect = dialect
        binds = {name: bind for bind, name in compiled.bind_names.items()}
        #: The parameters' names in the order the driver takes them (positional
        #: paramstyles), or None (named: the driver takes a mapping).
        self._order: list[str] | None = (
            list(compiled.positiontup or ()) if compiled.positional else None
        )
        #: Values of the statement's own literals (``status = 'IN_PROGRESS'``).
        self._fixed = {
            name: bind.effective_value for name, bind in binds.items() if not bind.required
        }
        self._binders: list[tuple[str, Processor]] = []
        for name, bind in binds.items():
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                self._binders.append((name, process))
        # (a SELECT's columns, or what an INSERT ... RETURNING returns)
        columns = getattr(statement, "exported_columns", ())
        self._loaders: list[Processor | None] = [
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
        ]

    def _parameters(self, values: Mapping[str, Any]) -> Sequence[Any] | dict[str, Any]:
        params = {**self._fixed, **values} if self._fixed else dict(values)
        for name, process in self._binders:
            params[name] = process(params[name])
        if self._order is None:
            return params
        return [params[name] for name in self._order]

    def _execute(self, conn: Connection, values: Mapping[str, Any]) -> Any:
        params = self._parameters(values)
        cursor = conn.connection.cursor()
        try:
            cursor.execute(self.sql, params)
        except self._dialect.loaded_dbapi.Error as error:
            disconnect = self._dialect.is_disconnect(error, conn.connection, cursor)
            if disconnect:
                conn.invalidate(error)
            raise exc.DBAPIError.instance(
                self.sql,
                params,
                error,
                self._dialect.loaded_dbapi.Error,
                connection_invalidated=disconnect,
                dialect=self._dialect,
            ) from error
        return cursor

    def run(self, conn: Connection, values: Mapping[str, Any]) -> None:
        """Execute; no rows expected."""
        self._execute(conn, values).close()

    def first(self, conn: Connection, values: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """Execute; the first row, its values as SQLAlchemy would read them, or None."""
        cursor = self._execute(conn, values)
        try:
            row = cursor.fetchone()
        finally:
            cursor.close()
        if row is None:
            return None
        return tuple(
            value if load is None else load(value)
            for value, load in zip(row, self._loaders, strict=True)
        )


#: A statement, or the statement for a dialect (e.g. a dialect's own ``INSERT``).
Statement = ClauseElement | Callable[[Dialect], ClauseElement]


class Statements:
    """A set of statements, each prepared once per dialect on first use."""

    def __init__(self, **statements: Statement) -> None:
        self._statements = statements
        #: By dialect object: an engine's connections share one, so a lookup on the
        #: hot path is one dict get.
        self._prepared: dict[Dialect, dict[str, Prepared]] = {}

    def on(self, conn: Connection) -> dict[str, Prepared]:
        """The statements prepared for the dialect of ``conn``."""
        dialect = conn.dialect
        prepared = self._prepared.get(dialect)
        if prepared is None:
            prepared = {
                name: Prepared(s if isinstance(s, ClauseElement) else s(dialect), dialect)
                for name, s in self._statements.items()
            }
            self._prepared[dialect] = prepared
        return prepared
