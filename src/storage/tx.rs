//! The few primitives every backend gives the storage rules: run a
//! statement, read its rows, insert many rows at once, inside one
//! transaction ([`Tx`]).
//!
//! The rules ([`super::log`], [`super::presence`], [`super::edit`]) are
//! written once over `&mut dyn Tx`; a backend only binds [`Param`]s, turns
//! its rows into [`Row`]s and classifies its errors. Statements come from
//! the dialect table ([`super::sql`]).

use async_trait::async_trait;
use switchyard_core::storage::{Result, StorageError, StorageFault};

use super::sql::Sql;

/// A value bound to a statement's `$N` placeholder (N = its index + 1).
/// Nulls are typed: Postgres must know a parameter's type.
#[derive(Debug, Clone, Copy)]
pub enum Param<'a> {
    Int(i64),
    OptInt(Option<i64>),
    Text(&'a str),
    OptText(Option<&'a str>),
    Bool(bool),
    /// A list of texts, for `channel IN (...)`-style filters: an array on
    /// Postgres (`= ANY($N)`), a JSON array on SQLite (`json_each($N)`).
    Texts(&'a [&'a str]),
}

/// One column of many rows to insert ([`Tx::insert_rows`]): the values of
/// parameter `$N` for every row, in row order.
#[derive(Debug, Clone)]
pub enum Column<'a> {
    Ints(Vec<i64>),
    OptInts(Vec<Option<i64>>),
    Texts(Vec<&'a str>),
    OptTexts(Vec<Option<&'a str>>),
}

impl Column<'_> {
    pub fn len(&self) -> usize {
        match self {
            Column::Ints(v) => v.len(),
            Column::OptInts(v) => v.len(),
            Column::Texts(v) => v.len(),
            Column::OptTexts(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A value read from a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Text(String),
    Bool(bool),
}

/// A row, read in full.
#[derive(Debug, Clone, Default)]
pub struct Row(pub Vec<Cell>);

impl Row {
    fn cell(&self, i: usize) -> Result<&Cell> {
        self.0.get(i).ok_or_else(|| column_error(i, "missing"))
    }

    pub fn int(&self, i: usize) -> Result<i64> {
        self.opt_int(i)?.ok_or_else(|| column_error(i, "null"))
    }

    pub fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        match self.cell(i)? {
            Cell::Null => Ok(None),
            Cell::Int(n) => Ok(Some(*n)),
            Cell::Bool(b) => Ok(Some(i64::from(*b))),
            Cell::Text(_) => Err(column_error(i, "text, not an integer")),
        }
    }

    pub fn bool(&self, i: usize) -> Result<bool> {
        match self.cell(i)? {
            Cell::Bool(b) => Ok(*b),
            Cell::Int(n) => Ok(*n != 0),
            _ => Err(column_error(i, "not a boolean")),
        }
    }

    /// Takes a text column out of the row (no copy).
    pub fn text(&mut self, i: usize) -> Result<String> {
        self.opt_text(i)?.ok_or_else(|| column_error(i, "null"))
    }

    /// Takes a nullable text column out of the row (no copy).
    pub fn opt_text(&mut self, i: usize) -> Result<Option<String>> {
        match self.0.get_mut(i) {
            Some(Cell::Null) => Ok(None),
            Some(Cell::Text(s)) => Ok(Some(std::mem::take(s))),
            Some(_) => Err(column_error(i, "not text")),
            None => Err(column_error(i, "missing")),
        }
    }
}

fn column_error(i: usize, what: &str) -> StorageError {
    StorageError::new(StorageFault::Other, format!("column {i}: {what}"))
}

/// A transaction (or, for reads, a connection) of one backend.
#[async_trait]
pub trait Tx: Send {
    /// Runs a statement; returns the rows it changed. A statement whose
    /// text is empty for this backend does nothing (see [`Sql`]).
    async fn execute(&mut self, sql: &Sql, params: &[Param<'_>]) -> Result<u64>;

    /// Runs a query and reads every row.
    async fn query(&mut self, sql: &Sql, params: &[Param<'_>]) -> Result<Vec<Row>>;

    /// Inserts one row per index of `columns` (all of one length) with an
    /// insert statement of the table (one statement per row on SQLite, one
    /// for all rows on Postgres).
    async fn insert_rows(&mut self, sql: &Sql, columns: &[Column<'_>]) -> Result<()>;

    /// Runs a statement for many rows given as columns, like
    /// [`Tx::insert_rows`], and returns the rows it answers for them all.
    async fn query_rows(&mut self, sql: &Sql, columns: &[Column<'_>]) -> Result<Vec<Row>>;

    /// The first row, if any.
    async fn query_opt(&mut self, sql: &Sql, params: &[Param<'_>]) -> Result<Option<Row>> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    /// The one row a query must return.
    async fn query_one(&mut self, sql: &Sql, params: &[Param<'_>]) -> Result<Row> {
        self.query_opt(sql, params)
            .await?
            .ok_or_else(|| StorageError::new(StorageFault::Other, "expected a row, got none"))
    }
}
