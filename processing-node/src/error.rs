//! Errors of the encodings: bytes from the store that cannot be decoded, and misuse of records.

/// Stored bytes that do not follow the encoding they were read as.
///
/// Everything this crate decodes comes from the shared store, i.e. was written by some
/// processing node, possibly of another version, and may be damaged. Decoding therefore
/// never panics; it says what it was reading (`what`), where, and why it gave up, so that the
/// caller can log a useful message and refuse the record instead of crashing the node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended inside a value.
    #[error("{what}: input ends at offset {offset} inside a value")]
    Truncated {
        /// The kind of encoding being decoded ("key", "row", "record", ...).
        what: &'static str,
        /// Offset at which more bytes were needed.
        offset: usize,
    },
    /// A type tag (or format version) that this code does not know.
    #[error("{what}: unknown tag {tag:#04x} at offset {offset}")]
    UnknownTag {
        /// The kind of encoding being decoded.
        what: &'static str,
        /// The offending byte.
        tag: u8,
        /// Its offset.
        offset: usize,
    },
    /// Bytes that are well-formed in length but not a valid value (bad escape, non-canonical
    /// integer, invalid UTF-8, a decimal outside the supported range, unordered versions...).
    #[error("{what}: invalid value at offset {offset}: {reason}")]
    Invalid {
        /// The kind of encoding being decoded.
        what: &'static str,
        /// Offset of the value.
        offset: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Bytes left over after a complete value.
    #[error("{what}: {len} unexpected bytes after the end")]
    TrailingBytes {
        /// The kind of encoding being decoded.
        what: &'static str,
        /// How many bytes were left.
        len: usize,
    },
}

/// A record operation that would break the record's invariants.
///
/// These are caller mistakes or lost races, not damaged data: the transaction layer turns
/// [`RecordError::NotNewest`] into a serialization failure, because writing below a newer
/// version would make the new version invisible to readers that see both.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// A new version must carry a tid above every version already in the record.
    #[error("version {tid} is not newer than the record's newest version {newest}")]
    NotNewest {
        /// The tid of the version being added.
        tid: u64,
        /// The record's newest tid.
        newest: u64,
    },
    /// Versions given to a record were not in strictly descending tid order.
    #[error("versions are not strictly newest first: tid {tid} follows tid {previous}")]
    Unordered {
        /// The tid that should have come first.
        previous: u64,
        /// The tid that followed it.
        tid: u64,
    },
}
