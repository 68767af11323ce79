//! Byte encodings of SQL values: order-preserving keys and compact row values.
//!
//! The store only knows ordered byte strings, so everything the processing node keeps there
//! passes through one of these two encodings. [`key`] is for bytes the store must *order*
//! (primary keys, index entries): byte-wise comparison of encodings equals SQL comparison of
//! the values, and every column is self-delimiting and self-describing. [`row`] is for bytes
//! the store only *holds* (the row inside a record version): as small and as fast as possible.

pub(crate) mod cursor;
pub mod key;
pub mod row;
pub(crate) mod varint;
