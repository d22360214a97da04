//! SQLite's errors, classified by their result code (the primary code is
//! the low byte of the extended one: `SQLITE_BUSY_SNAPSHOT` 517 is a BUSY,
//! `SQLITE_CONSTRAINT_COMMITHOOK` 531 a CONSTRAINT).

use rusqlite::ffi;
use switchyard_core::storage::{StorageError, StorageFault};

/// What a result code means for the caller.
pub fn fault(extended_code: i32) -> StorageFault {
    match extended_code & 0xff {
        // Another connection holds a lock, memory or the disk failed, or the
        // file cannot be opened: transient, retry later.
        ffi::SQLITE_BUSY
        | ffi::SQLITE_LOCKED
        | ffi::SQLITE_NOMEM
        | ffi::SQLITE_IOERR
        | ffi::SQLITE_FULL
        | ffi::SQLITE_CANTOPEN
        | ffi::SQLITE_PROTOCOL => StorageFault::Unavailable,
        ffi::SQLITE_CONSTRAINT => StorageFault::Constraint,
        _ => StorageFault::Other,
    }
}

/// A rusqlite error as the core's storage error.
pub fn classify(e: rusqlite::Error) -> StorageError {
    let fault = match &e {
        rusqlite::Error::SqliteFailure(failure, _) => fault(failure.extended_code),
        _ => StorageFault::Other,
    };
    StorageError::new(fault, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extended_codes_are_read_by_their_primary_code() {
        assert_eq!(fault(5), StorageFault::Unavailable); // SQLITE_BUSY
        assert_eq!(fault(517), StorageFault::Unavailable); // SQLITE_BUSY_SNAPSHOT
        assert_eq!(fault(261), StorageFault::Unavailable); // SQLITE_BUSY_RECOVERY
        assert_eq!(fault(6), StorageFault::Unavailable); // SQLITE_LOCKED
        assert_eq!(fault(13), StorageFault::Unavailable); // SQLITE_FULL
        assert_eq!(fault(19), StorageFault::Constraint); // SQLITE_CONSTRAINT
        assert_eq!(fault(531), StorageFault::Constraint); // SQLITE_CONSTRAINT_COMMITHOOK
        assert_eq!(fault(2067), StorageFault::Constraint); // SQLITE_CONSTRAINT_UNIQUE
        assert_eq!(fault(1555), StorageFault::Constraint); // SQLITE_CONSTRAINT_PRIMARYKEY
        assert_eq!(fault(1), StorageFault::Other); // SQLITE_ERROR
        assert_eq!(fault(11), StorageFault::Other); // SQLITE_CORRUPT
    }

    #[test]
    fn a_real_unique_violation_is_a_constraint() {
        let db = rusqlite::Connection::open_in_memory().unwrap();
        db.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY); INSERT INTO t VALUES (1);")
            .unwrap();
        let e = db.execute("INSERT INTO t VALUES (1)", []).unwrap_err();
        assert_eq!(classify(e).fault, StorageFault::Constraint);
        let e = db.execute("SELECT nonsense FROM nowhere", []).unwrap_err();
        assert_eq!(classify(e).fault, StorageFault::Other);
    }
}
