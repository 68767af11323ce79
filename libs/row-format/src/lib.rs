//! The byte layout of the versioned records that processing nodes keep in the storage layer.
//!
//! Processing nodes write and read these records; storage nodes otherwise treat values as
//! opaque bytes. This crate is the one place that layout is spelled out, so that a storage
//! node can answer a scan with only the records that may hold a row the reader asked for
//! ([`filter`]) instead of shipping a whole key range over the network to be filtered on the
//! other side: a TPC-C Payment by customer name otherwise moves 3,000 customer rows (about
//! 2 MB) to keep one.
//!
//! # Record
//!
//! [`RECORD_FORMAT_V1`], the version count (LEB128), then per version, newest first: the tid
//! (LEB128; for every version after the first, the difference to the previous, newer, tid)
//! and the body length plus one (LEB128; `0` marks a tombstone) followed by the body, a row.
//!
//! # Row
//!
//! The value count (LEB128), then per value one tag byte (the `TAG_` constants) and its
//! payload. Tags make a row readable without the catalog, which is what lets a storage node
//! find a column's value at all.

pub mod filter;

/// The first byte of every record in this layout.
pub const RECORD_FORMAT_V1: u8 = 1;

/// NULL; no payload.
pub const TAG_NULL: u8 = 0;
/// `false`; no payload.
pub const TAG_FALSE: u8 = 1;
/// `true`; no payload.
pub const TAG_TRUE: u8 = 2;
/// An integer: zigzag LEB128.
pub const TAG_INT: u8 = 3;
/// A float: 8 bytes, little-endian IEEE bits.
pub const TAG_FLOAT: u8 = 4;
/// A decimal: one byte `sign << 7 | scale`, then the mantissa's magnitude in LEB128.
pub const TAG_DECIMAL: u8 = 5;
/// Text: length (LEB128), then UTF-8 bytes.
pub const TAG_TEXT: u8 = 6;
/// Bytes: length (LEB128), then the bytes.
pub const TAG_BYTES: u8 = 7;
/// A date: days since 2000-01-01, zigzag LEB128.
pub const TAG_DATE: u8 = 8;
/// A timestamp: microseconds since 2000-01-01, zigzag LEB128.
pub const TAG_TIMESTAMP: u8 = 9;

/// The longest LEB128 value of the layout (128 bits, for decimal mantissas).
pub const MAX_VARINT_BYTES: usize = 19;
