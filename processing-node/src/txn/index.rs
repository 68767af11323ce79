//! Secondary indexes, as the transaction core keeps them.
//!
//! Non-unique indexes are *version-unaware* (DESIGN.md): one ordered entry per (value, row),
//! key = index id + encoded values + encoded primary key, empty value; written at commit
//! after the rows, never changed by later writers; a reader fetches the row and skips the
//! entry when the row's visible version does not hold the value; [`super::gc::sweep_index`]
//! removes entries whose value no version holds any more.
//!
//! Unique indexes are versioned *claims* (key = index id + encoded values, value = a record
//! whose versions hold the owning row's encoded primary key, or a tombstone), written with
//! the same conditional writes as rows. Two transactions claiming one value therefore
//! conflict like two writers of one row: exactly one can commit. Rows with a NULL in an
//! indexed column claim nothing (NULLs are distinct, as in PostgreSQL) and get a plain entry.
//! The write path is in [`super::write`], the read path in [`super::read`].
