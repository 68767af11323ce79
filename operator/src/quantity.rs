//! Kubernetes resource quantities as byte counts (`4Gi` → 4294967296).
//!
//! The storage node takes its memory limit in bytes (`SHMDB_MEMORY_LIMIT`) while users write
//! Kubernetes quantities; the conversion lives here so the spec check and the StatefulSet
//! agree on the same number.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Converts a quantity to bytes; `Err` says what is wrong, for a Degraded message.
pub fn to_bytes(quantity: &Quantity) -> Result<u64, String> {
    let text = quantity.0.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let multiplier: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "Pi" => 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("unknown unit {other:?} in {text:?}")),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a quantity"))?;
    let bytes = (value * multiplier).round();
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(bytes as u64)
}

/// Bytes as a binary-suffixed quantity when exact (`4294967296` → `4Gi`), else plain bytes.
pub fn from_bytes(bytes: u64) -> Quantity {
    for (suffix, unit) in [("Gi", 1u64 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return Quantity(format!("{}{suffix}", bytes / unit));
        }
    }
    Quantity(bytes.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_decimal_and_fractional_units() {
        let q = |s: &str| to_bytes(&Quantity(s.to_string()));
        assert_eq!(q("4Gi"), Ok(4 << 30));
        assert_eq!(q("512Mi"), Ok(512 << 20));
        assert_eq!(q("1.5Gi"), Ok(3 << 29));
        assert_eq!(q("2G"), Ok(2_000_000_000));
        assert_eq!(q("1000"), Ok(1000));
        assert!(q("4GB").is_err());
        assert!(q("lots").is_err());
        assert!(q("").is_err());
    }

    #[test]
    fn formats_exact_binary_units() {
        assert_eq!(from_bytes(4 << 30).0, "4Gi");
        assert_eq!(from_bytes(1280 << 20).0, "1280Mi");
        assert_eq!(from_bytes(1000).0, "1000");
    }
}
