//! A bounds-checked reader over stored bytes, shared by the decoders.

use crate::error::DecodeError;

/// Reads stored bytes front to back, turning every overrun into a [`DecodeError`].
///
/// The decoders read untrusted bytes; funnelling every access through this type keeps them
/// free of indexing panics and gives every error the offset at which it happened.
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Cursor<'a> {
    /// Starts reading `bytes`, naming the encoding `what` in errors.
    pub(crate) fn new(bytes: &'a [u8], what: &'static str) -> Cursor<'a> {
        Cursor {
            bytes,
            pos: 0,
            what,
        }
    }

    /// Offset of the next byte.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Whether everything has been read.
    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    /// The bytes not read yet.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.pos..).unwrap_or_default()
    }

    /// Reads one byte.
    pub(crate) fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = *self.bytes.get(self.pos).ok_or_else(|| self.truncated())?;
        self.pos += 1;
        Ok(b)
    }

    /// Reads `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or_else(|| self.truncated())?;
        let slice = self
            .bytes
            .get(self.pos..end)
            .ok_or_else(|| self.truncated())?;
        self.pos = end;
        Ok(slice)
    }

    /// Reads exactly `N` bytes into an array.
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, _) = self
            .rest()
            .split_first_chunk::<N>()
            .ok_or_else(|| self.truncated())?;
        let head = *head;
        self.pos += N;
        Ok(head)
    }

    /// Fails unless everything has been read.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        match self.rest().len() {
            0 => Ok(()),
            len => Err(DecodeError::TrailingBytes {
                what: self.what,
                len,
            }),
        }
    }

    /// The error for input that ends too early.
    pub(crate) fn truncated(&self) -> DecodeError {
        DecodeError::Truncated {
            what: self.what,
            offset: self.bytes.len(),
        }
    }

    /// The error for an unknown tag found at `offset`.
    pub(crate) fn unknown_tag(&self, tag: u8, offset: usize) -> DecodeError {
        DecodeError::UnknownTag {
            what: self.what,
            tag,
            offset,
        }
    }

    /// The error for an invalid value starting at `offset`.
    pub(crate) fn invalid(&self, offset: usize, reason: &'static str) -> DecodeError {
        DecodeError::Invalid {
            what: self.what,
            offset,
            reason,
        }
    }
}
