//! Postgres's errors, classified: SQLSTATE classes for errors the server
//! reports, the kind of failure for the ones sqlx meets before it.

use switchyard_core::storage::{StorageError, StorageFault};

/// What a SQLSTATE means for the caller, by its class (first two characters).
pub fn fault(sqlstate: &str) -> StorageFault {
    match sqlstate.get(..2).unwrap_or_default() {
        // Connection exception, invalid authorization, a database that is
        // gone, insufficient resources, operator intervention (shutdown,
        // query cancelled), system error: transient, retry later.
        "08" | "28" | "3D" | "53" | "57" | "58" => StorageFault::Unavailable,
        // Transaction rollback (serialization failure, deadlock): the
        // transaction may be run again at once.
        "40" => StorageFault::Conflict,
        // Integrity constraint violation.
        "23" => StorageFault::Constraint,
        _ => StorageFault::Other,
    }
}

/// A sqlx error as the core's storage error.
pub fn classify(e: sqlx::Error) -> StorageError {
    let fault = match &e {
        sqlx::Error::PoolClosed => StorageFault::Closed,
        sqlx::Error::PoolTimedOut
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => StorageFault::Unavailable,
        sqlx::Error::Database(db) => db.code().map_or(StorageFault::Other, |c| fault(&c)),
        _ => StorageFault::Other,
    };
    StorageError::new(fault, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstate_classes() {
        assert_eq!(fault("08006"), StorageFault::Unavailable); // connection failure
        assert_eq!(fault("57P01"), StorageFault::Unavailable); // admin shutdown
        assert_eq!(fault("53300"), StorageFault::Unavailable); // too many connections
        assert_eq!(fault("40001"), StorageFault::Conflict); // serialization failure
        assert_eq!(fault("40P01"), StorageFault::Conflict); // deadlock
        assert_eq!(fault("3D000"), StorageFault::Unavailable); // no such database
        assert_eq!(fault("23505"), StorageFault::Constraint); // unique violation
        assert_eq!(fault("22021"), StorageFault::Other); // bad encoding (NUL in text)
        assert_eq!(fault("42P01"), StorageFault::Other); // undefined table
        assert_eq!(fault(""), StorageFault::Other);
    }

    #[test]
    fn pool_errors() {
        assert_eq!(
            classify(sqlx::Error::PoolClosed).fault,
            StorageFault::Closed
        );
        assert_eq!(
            classify(sqlx::Error::PoolTimedOut).fault,
            StorageFault::Unavailable
        );
        assert_eq!(
            classify(sqlx::Error::RowNotFound).fault,
            StorageFault::Other
        );
    }
}
