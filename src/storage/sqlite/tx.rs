//! The [`Tx`] primitives on a rusqlite connection, run on the thread that
//! owns it.
//!
//! Statements are written with `$N` placeholders (see `storage::sql`);
//! SQLite's own syntax for the N-th parameter is `?N`, so each statement
//! is rewritten once and kept, and rusqlite keeps it prepared.
//!
//! Invariant: every `async` primitive here completes without suspending
//! (SQLite runs on the calling thread), so the rules' futures over a
//! [`SqliteTx`] finish in one poll of the owning thread's executor.

use std::collections::HashMap;

use async_trait::async_trait;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ToSql};
use switchyard_core::storage::{Result, StorageError, StorageFault};

use super::error::classify;
use crate::storage::sql::Sql;
use crate::storage::tx::{Cell, Column, Param, Row, Tx};

/// Prepared statements kept per connection: more than the service has.
const STATEMENTS: usize = 128;

/// A connection with its statements rewritten for SQLite.
pub struct Conn {
    pub db: Connection,
    /// `$N` texts rewritten to `?N`, by the address of the static text.
    rewritten: HashMap<usize, Box<str>>,
}

impl Conn {
    pub fn new(db: Connection) -> Self {
        db.set_prepared_statement_cache_capacity(STATEMENTS);
        Self {
            db,
            rewritten: HashMap::new(),
        }
    }

    /// The statement, rewritten (once) and prepared (once, then kept).
    fn prepare(&mut self, sql: &Sql) -> Result<rusqlite::CachedStatement<'_>> {
        let text = self
            .rewritten
            .entry(sql.sqlite.as_ptr() as usize)
            .or_insert_with(|| numbered_placeholders(sql.sqlite).into_boxed_str());
        self.db.prepare_cached(text).map_err(classify)
    }
}

/// `$N` → `?N`, outside string literals.
pub fn numbered_placeholders(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            in_string = !in_string;
        }
        if c == '$' && !in_string && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

/// Statements on a connection, inside a transaction the owner began (or,
/// for reads, none).
pub struct SqliteTx<'c> {
    pub conn: &'c mut Conn,
}

fn bind_value<'a>(p: &Param<'a>) -> Box<dyn ToSql + 'a> {
    match *p {
        Param::Int(n) => Box::new(n),
        Param::OptInt(n) => Box::new(n),
        Param::Text(s) => Box::new(s),
        Param::OptText(s) => Box::new(s),
        Param::Bool(b) => Box::new(b),
        Param::Texts(list) => Box::new(serde_json::to_string(list).expect("strings serialize")),
    }
}

fn bind(stmt: &mut rusqlite::CachedStatement<'_>, params: &[Param<'_>]) -> Result<()> {
    for (i, p) in params.iter().enumerate() {
        stmt.raw_bind_parameter(i + 1, bind_value(p))
            .map_err(classify)?;
    }
    Ok(())
}

fn cell(value: ValueRef<'_>) -> Result<Cell> {
    Ok(match value {
        ValueRef::Null => Cell::Null,
        ValueRef::Integer(n) => Cell::Int(n),
        ValueRef::Text(t) => Cell::Text(
            std::str::from_utf8(t)
                .map_err(|e| StorageError::new(StorageFault::Other, e.to_string()))?
                .to_string(),
        ),
        ValueRef::Real(_) | ValueRef::Blob(_) => {
            return Err(StorageError::new(
                StorageFault::Other,
                "unexpected real or blob column",
            ));
        }
    })
}

#[async_trait]
impl Tx for SqliteTx<'_> {
    async fn execute(&mut self, sql: &Sql, params: &[Param<'_>]) -> Result<u64> {
        if sql.sqlite.is_empty() {
            return Ok(0);
        }
        let mut stmt = self.conn.prepare(sql)?;
        bind(&mut stmt, params)?;
        Ok(stmt.raw_execute().map_err(classify)? as u64)
    }

    async fn query(&mut self, sql: &Sql, params: &[Param<'_>]) -> Result<Vec<Row>> {
        let mut stmt = self.conn.prepare(sql)?;
        bind(&mut stmt, params)?;
        let width = stmt.column_count();
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(classify)? {
            out.push(read_row(row, width)?);
        }
        Ok(out)
    }

    async fn insert_rows(&mut self, sql: &Sql, columns: &[Column<'_>]) -> Result<()> {
        let mut stmt = self.conn.prepare(sql)?;
        // One prepared statement, run per row: no round trips to save here.
        for row in 0..rows(columns) {
            bind_row(&mut stmt, columns, row)?;
            stmt.raw_execute().map_err(classify)?;
        }
        Ok(())
    }

    async fn query_rows(&mut self, sql: &Sql, columns: &[Column<'_>]) -> Result<Vec<Row>> {
        let mut stmt = self.conn.prepare(sql)?;
        let width = stmt.column_count();
        let mut out = Vec::new();
        for row in 0..rows(columns) {
            bind_row(&mut stmt, columns, row)?;
            let mut answered = stmt.raw_query();
            while let Some(r) = answered.next().map_err(classify)? {
                out.push(read_row(r, width)?);
            }
        }
        Ok(out)
    }
}

fn rows(columns: &[Column<'_>]) -> usize {
    columns.first().map_or(0, Column::len)
}

fn bind_row(
    stmt: &mut rusqlite::CachedStatement<'_>,
    columns: &[Column<'_>],
    row: usize,
) -> Result<()> {
    for (i, column) in columns.iter().enumerate() {
        let bound = match column {
            Column::Ints(v) => stmt.raw_bind_parameter(i + 1, v[row]),
            Column::OptInts(v) => stmt.raw_bind_parameter(i + 1, v[row]),
            Column::Texts(v) => stmt.raw_bind_parameter(i + 1, v[row]),
            Column::OptTexts(v) => stmt.raw_bind_parameter(i + 1, v[row]),
        };
        bound.map_err(classify)?;
    }
    Ok(())
}

fn read_row(r: &rusqlite::Row<'_>, width: usize) -> Result<Row> {
    let mut cells = Vec::with_capacity(width);
    for i in 0..width {
        cells.push(cell(r.get_ref(i).map_err(classify)?)?);
    }
    Ok(Row(cells))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_sqlite_numbered_parameters() {
        assert_eq!(
            numbered_placeholders("SELECT $2 || $1 || '$3' WHERE a = $10"),
            "SELECT ?2 || ?1 || '$3' WHERE a = ?10"
        );
    }

    #[tokio::test]
    async fn parameters_bind_by_their_number_in_any_order() {
        let mut conn = Conn::new(Connection::open_in_memory().unwrap());
        let mut tx = SqliteTx { conn: &mut conn };
        let sql = Sql::both("SELECT $2 || $1 || $2");
        let mut row = tx
            .query_one(&sql, &[Param::Text("a"), Param::Text("b")])
            .await
            .unwrap();
        assert_eq!(row.text(0).unwrap(), "bab");
        let list = ["x", "y"];
        let sql = Sql::both("SELECT COUNT(*) FROM json_each($1)");
        let row = tx.query_one(&sql, &[Param::Texts(&list)]).await.unwrap();
        assert_eq!(row.int(0).unwrap(), 2);
    }
}
