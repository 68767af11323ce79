//! Encoding of (table, key) pairs into the one ordered key space that ranges partition.

/// Encodes `(table, key)` as one ordered byte string: the table id big-endian, then the key.
///
/// Big-endian keeps the order of tables numeric, and since the table prefix has a fixed
/// width, ordering within a table is exactly the byte order of its keys. This lets a new
/// table live inside an existing range without any change to the partition map.
pub fn range_key(table: u64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.len());
    out.extend_from_slice(&table.to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// The first range key of `table` (its empty key).
pub fn table_start(table: u64) -> Vec<u8> {
    table.to_be_bytes().to_vec()
}

/// The exclusive end of `table` in the range-key space, or `None` for the last table id.
pub fn table_end(table: u64) -> Option<Vec<u8>> {
    table.checked_add(1).map(table_start)
}

/// Splits a range key back into its table and key; `None` if it is shorter than a table id.
pub fn decode_range_key(range_key: &[u8]) -> Option<(u64, &[u8])> {
    let (table, key) = range_key.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*table), key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_follows_table_then_key() {
        let mut keys = [
            range_key(2, b""),
            range_key(1, b"zz"),
            range_key(1, b"a"),
            range_key(256, b"a"),
            range_key(1, b""),
            range_key(1, b"a\0"),
        ];
        keys.sort();
        let decoded: Vec<_> = keys
            .iter()
            .map(|k| decode_range_key(k).map(|(t, k)| (t, k.to_vec())))
            .collect();
        assert_eq!(
            decoded,
            vec![
                Some((1, b"".to_vec())),
                Some((1, b"a".to_vec())),
                Some((1, b"a\0".to_vec())),
                Some((1, b"zz".to_vec())),
                Some((2, b"".to_vec())),
                Some((256, b"a".to_vec())),
            ]
        );
    }

    #[test]
    fn table_bounds() {
        assert!(table_start(7) < range_key(7, b"\xff\xff"));
        assert!(range_key(7, b"\xff\xff") < table_end(7).unwrap_or_default());
        assert_eq!(table_end(u64::MAX), None);
        assert_eq!(decode_range_key(b"short"), None);
    }
}
