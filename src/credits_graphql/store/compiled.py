"""Hot statements compiled once per dialect, to run on the driver's connection outside SQLAlchemy's pipeline.

Through SQLAlchemy's async pipeline (a greenlet switch, the compiled-cache lookup, the execution context, the
result's construction) a statement costs ~100 us of CPU; an index lookup or a one-row insert takes the database a
few. The point reads (store/point_reads.py) and a write transaction's hot statements
(store/transaction_statements.py) run their statements compiled here instead, with the columns' own bind and
result processing, so that a value is sent and read as it is through SQLAlchemy."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Dialect, Executable
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.selectable import Select

_NOTHING = object()


class CompiledStatement:
    """A SELECT, or an INSERT/UPDATE given the names of its values, compiled for a dialect: its SQL, its parameters
    in order, and its rows' processing (the selected or returned columns)."""

    def __init__(self, statement: Executable, dialect: Dialect, value_names: tuple[str, ...] = ()) -> None:
        if isinstance(statement, Select):
            compiled = statement.compile(dialect=dialect)
            columns = list(statement.selected_columns)
        elif isinstance(statement, UpdateBase):
            compiled = statement.compile(dialect=dialect, column_keys=list(value_names))
            if compiled.insert_prefetch or compiled.update_prefetch:
                raise ValueError("a column default computed in Python is SQLAlchemy's to fill in")
            columns = list(compiled.effective_returning or ())  # with PostgreSQL's implicit RETURNING of the key
        else:
            raise ValueError(f"not a SELECT, INSERT or UPDATE: {type(statement).__name__}")
        self.sql = str(compiled)
        if compiled.positiontup is None or compiled.post_compile_params:
            raise ValueError("each parameter is bound once, in a positional paramstyle (no expanding IN)")
        self._names = list(compiled.positiontup)
        self._constants = {name: bind.effective_value for name in self._names  # the values bound in the statement
                           if not (bind := compiled.binds[name]).required}
        self._bind = [(i, processor) for i, name in enumerate(self._names) if (processor := compiled.binds[
            name].type.dialect_impl(dialect).bind_processor(dialect)) is not None]
        self._row: Any = namedtuple("_Row", [column.key for column in columns])  # type: ignore[misc]
        self._result = [(i, processor) for i, column in enumerate(columns) if (processor := column.type.dialect_impl(
            dialect).result_processor(dialect, None)) is not None]

    def parameters(self, values: Mapping[str, Any]) -> list[Any]:
        constants = self._constants
        parameters = [values[name] if name in values else constants[name] for name in self._names]
        for i, process in self._bind:
            parameters[i] = process(parameters[i])
        return parameters

    def parameters_many(self, value_sets: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
        """`parameters` of each value set, where a value is processed once for as long as the same object comes
        again (a batch's entries share their timestamps: the processing was most of a row's cost)."""
        constants = self._constants
        last: list[tuple[Any, Any]] = [(_NOTHING, None)] * len(self._bind)  # per processed position
        parameter_sets = []
        for values in value_sets:
            parameters = [values[name] if name in values else constants[name] for name in self._names]
            for k, (i, process) in enumerate(self._bind):
                value = parameters[i]
                if value is not last[k][0]:
                    last[k] = (value, process(value))
                parameters[i] = last[k][1]
            parameter_sets.append(parameters)
        return parameter_sets

    def row(self, values: tuple[Any, ...]) -> Any:
        """Attribute access by column name, as a SQLAlchemy Row's."""
        if self._result:
            processed = list(values)
            for i, process in self._result:
                processed[i] = process(processed[i])
            return self._row._make(processed)
        return self._row._make(values)


MAX_CACHED = 64


class CompiledStatements:
    """Each statement compiled at its first use, per set of value names (an INSERT's or UPDATE's columns). The
    statements are the repositories' module-level constants; one built per call would be compiled each time
    beyond MAX_CACHED, not kept."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self._compiled: dict[tuple[Executable, tuple[str, ...]], CompiledStatement] = {}

    def compiled(self, statement: Executable, values: Mapping[str, Any]) -> CompiledStatement:
        key = (statement, tuple(values) if isinstance(statement, UpdateBase) else ())
        found = self._compiled.get(key)
        if found is None:
            found = CompiledStatement(statement, self.dialect, key[1])
            if len(self._compiled) < MAX_CACHED:
                self._compiled[key] = found
        return found
