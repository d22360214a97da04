//! SQLite migrations, from `migrations/sqlite/`, applied in order, each in
//! its own transaction.
//!
//! Recorded in `_sqlx_migrations` exactly as sqlx (which earlier builds used)
//! records them, with the same SHA-384 checksums, so a database migrated by
//! any build is recognised by every other.

use rusqlite::{Connection, params};
use sha2::{Digest, Sha384};
use switchyard_core::storage::{Result, StorageError, StorageFault};

use super::error::classify;

/// Every migration: version, description, SQL.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "event log",
        include_str!("../../../migrations/sqlite/0001_event_log.sql"),
    ),
    (
        2,
        "presence",
        include_str!("../../../migrations/sqlite/0002_presence.sql"),
    ),
    (
        3,
        "editing",
        include_str!("../../../migrations/sqlite/0003_editing.sql"),
    ),
    (
        4,
        "inbox",
        include_str!("../../../migrations/sqlite/0004_inbox.sql"),
    ),
    (
        5,
        "event channels",
        include_str!("../../../migrations/sqlite/0005_event_channels.sql"),
    ),
    (
        6,
        "rooms",
        include_str!("../../../migrations/sqlite/0006_rooms.sql"),
    ),
    (
        7,
        "room leaves",
        include_str!("../../../migrations/sqlite/0007_room_leaves.sql"),
    ),
];

/// Applies the migrations `db` lacks.
pub fn run(db: &mut Connection) -> Result<()> {
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
            version BIGINT PRIMARY KEY,
            description TEXT NOT NULL,
            installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
            success BOOLEAN NOT NULL,
            checksum BLOB NOT NULL,
            execution_time BIGINT NOT NULL
        )",
    )
    .map_err(classify)?;
    let applied: Vec<(i64, bool, Vec<u8>)> = {
        let mut stmt = db
            .prepare("SELECT version, success, checksum FROM _sqlx_migrations ORDER BY version")
            .map_err(classify)?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(classify)?
            .collect::<rusqlite::Result<_>>()
            .map_err(classify)?
    };
    for (version, description, sql) in MIGRATIONS {
        let checksum = Sha384::digest(sql.as_bytes()).to_vec();
        match applied.iter().find(|(v, ..)| v == version) {
            Some((_, false, _)) => {
                return Err(failed(format!(
                    "migration {version} ({description}) failed earlier and left the database \
                     half migrated; repair it by hand"
                )));
            }
            Some((_, true, stored)) if *stored != checksum => {
                return Err(failed(format!(
                    "migration {version} ({description}) was applied from a different text"
                )));
            }
            Some(_) => continue,
            None => {}
        }
        let started = std::time::Instant::now();
        let tx = db.transaction().map_err(classify)?;
        tx.execute_batch(sql).map_err(classify)?;
        tx.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (?1, ?2, TRUE, ?3, ?4)",
            params![
                version,
                description,
                checksum,
                started.elapsed().as_nanos() as i64
            ],
        )
        .map_err(classify)?;
        tx.commit().map_err(classify)?;
    }
    Ok(())
}

fn failed(message: String) -> StorageError {
    StorageError::new(StorageFault::Other, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_once() {
        let mut db = Connection::open_in_memory().unwrap();
        run(&mut db).unwrap();
        run(&mut db).unwrap();
        let n: i64 = db
            .query_row("SELECT COUNT(*) FROM _sqlx_migrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n as usize, MIGRATIONS.len());
        db.execute_batch("SELECT last_id FROM log_head").unwrap();
    }
}
