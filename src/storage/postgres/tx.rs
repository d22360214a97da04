//! The [`Tx`] primitives over sqlx on a Postgres connection (inside a
//! transaction for writes).
//!
//! Rows are read by each column's declared type: the schema only has
//! BIGINT, TEXT and BOOLEAN (and aggregates of them).

use async_trait::async_trait;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{Column as _, PgConnection, Postgres, Row as _, TypeInfo, ValueRef};
use switchyard_core::storage::{Result, StorageError, StorageFault};

use super::error::classify;
use crate::storage::sql::Sql;
use crate::storage::tx::{Cell, Column, Param, Row, Tx};

/// Statements on one connection.
pub struct PgTx<'c> {
    pub conn: &'c mut PgConnection,
}

fn bind<'q>(
    mut query: Query<'q, Postgres, PgArguments>,
    params: &'q [Param<'q>],
) -> Query<'q, Postgres, PgArguments> {
    for p in params {
        query = match *p {
            Param::Int(n) => query.bind(n),
            Param::OptInt(n) => query.bind(n),
            Param::Text(s) => query.bind(s),
            Param::OptText(s) => query.bind(s),
            Param::Bool(b) => query.bind(b),
            Param::Texts(list) => query.bind(list),
        };
    }
    query
}

fn row(r: &PgRow) -> Result<Row> {
    let mut cells = Vec::with_capacity(r.columns().len());
    for (i, column) in r.columns().iter().enumerate() {
        let raw = r.try_get_raw(i).map_err(classify)?;
        if raw.is_null() {
            cells.push(Cell::Null);
            continue;
        }
        let cell = match column.type_info().name() {
            "INT8" => Cell::Int(r.try_get::<i64, _>(i).map_err(classify)?),
            "INT4" => Cell::Int(i64::from(r.try_get::<i32, _>(i).map_err(classify)?)),
            "INT2" => Cell::Int(i64::from(r.try_get::<i16, _>(i).map_err(classify)?)),
            "TEXT" | "VARCHAR" | "NAME" | "BPCHAR" => {
                Cell::Text(r.try_get::<String, _>(i).map_err(classify)?)
            }
            "BOOL" => Cell::Bool(r.try_get::<bool, _>(i).map_err(classify)?),
            // `SELECT pg_notify(...)` answers a void.
            "VOID" => Cell::Null,
            other => {
                return Err(StorageError::new(
                    StorageFault::Other,
                    format!("column {i} has unexpected type {other}"),
                ));
            }
        };
        cells.push(cell);
    }
    Ok(Row(cells))
}

#[async_trait]
impl Tx for PgTx<'_> {
    async fn execute(&mut self, sql: &Sql, params: &[Param<'_>]) -> Result<u64> {
        if sql.postgres.is_empty() {
            return Ok(0);
        }
        let done = bind(sqlx::query(sql.postgres), params)
            .execute(&mut *self.conn)
            .await
            .map_err(classify)?;
        Ok(done.rows_affected())
    }

    async fn query(&mut self, sql: &Sql, params: &[Param<'_>]) -> Result<Vec<Row>> {
        let rows = bind(sqlx::query(sql.postgres), params)
            .fetch_all(&mut *self.conn)
            .await
            .map_err(classify)?;
        rows.iter().map(row).collect()
    }

    async fn insert_rows(&mut self, sql: &Sql, columns: &[Column<'_>]) -> Result<()> {
        if columns.first().is_none_or(Column::is_empty) {
            return Ok(());
        }
        bind_columns(sqlx::query(sql.postgres), columns)
            .execute(&mut *self.conn)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn query_rows(&mut self, sql: &Sql, columns: &[Column<'_>]) -> Result<Vec<Row>> {
        if columns.first().is_none_or(Column::is_empty) {
            return Ok(Vec::new());
        }
        let rows = bind_columns(sqlx::query(sql.postgres), columns)
            .fetch_all(&mut *self.conn)
            .await
            .map_err(classify)?;
        rows.iter().map(row).collect()
    }
}

/// One statement for every row: each column travels as one array.
fn bind_columns<'q>(
    mut query: Query<'q, Postgres, PgArguments>,
    columns: &'q [Column<'q>],
) -> Query<'q, Postgres, PgArguments> {
    for column in columns {
        query = match column {
            Column::Ints(v) => query.bind(v.as_slice()),
            Column::OptInts(v) => query.bind(v.as_slice()),
            Column::Texts(v) => query.bind(v.as_slice()),
            Column::OptTexts(v) => query.bind(v.as_slice()),
        };
    }
    query
}
