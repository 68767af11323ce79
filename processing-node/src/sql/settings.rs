//! Session settings for SET / SHOW, and the values drivers expect to find.

use std::collections::BTreeMap;

use crate::sql::error::SqlError;

/// The settings a new session starts with (the wire layer reports some as ParameterStatus).
pub fn defaults() -> Vec<(&'static str, String)> {
    [
        ("application_name", ""),
        ("client_encoding", "UTF8"),
        ("client_min_messages", "notice"),
        ("datestyle", "ISO, MDY"),
        ("default_transaction_isolation", "read committed"),
        ("default_transaction_read_only", "off"),
        ("extra_float_digits", "1"),
        ("integer_datetimes", "on"),
        ("intervalstyle", "postgres"),
        ("is_superuser", "on"),
        ("lc_collate", "C"),
        ("lc_ctype", "C"),
        ("max_identifier_length", "63"),
        ("search_path", "\"$user\", public"),
        ("server_encoding", "UTF8"),
        ("server_version", "15.0"),
        ("server_version_num", "150000"),
        ("standard_conforming_strings", "on"),
        ("statement_timeout", "0"),
        ("synchronous_commit", "on"),
        ("timezone", "UTC"),
        ("transaction_read_only", "off"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect()
}

/// The settings of one session.
#[derive(Debug, Clone)]
pub struct Settings {
    values: BTreeMap<String, String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            values: defaults()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        }
    }
}

/// The display name of a setting as PostgreSQL spells it in SHOW's column.
fn display_name(name: &str) -> String {
    match name {
        "datestyle" => "DateStyle".into(),
        "timezone" => "TimeZone".into(),
        "intervalstyle" => "IntervalStyle".into(),
        other => other.to_string(),
    }
}

/// Checks an isolation level name. REPEATABLE READ is snapshot isolation; READ COMMITTED
/// (PostgreSQL's default, and ours) reads a newer snapshot per statement and still fails a
/// write over a change its statement did not see (40001, where PostgreSQL would wait and
/// re-check the row); READ UNCOMMITTED runs as READ COMMITTED, as in PostgreSQL.
/// SERIALIZABLE would be weaker than promised, so it is refused rather than silently
/// downgraded.
pub fn check_isolation(level: &str) -> Result<String, SqlError> {
    let l = level.trim().to_lowercase().replace('_', " ");
    match l.as_str() {
        "read committed" | "read uncommitted" | "repeatable read" => Ok(l),
        "serializable" => Err(SqlError::new(
            "0A000",
            "SERIALIZABLE isolation is not supported: shmdb runs snapshot isolation (use REPEATABLE READ; write skew is possible)",
        )),
        _ => Err(SqlError::new(
            "22023",
            format!("invalid value for parameter \"transaction_isolation\": \"{level}\""),
        )),
    }
}

impl Settings {
    /// The current transaction's isolation level: the one BEGIN or SET TRANSACTION chose,
    /// else the session default (kept apart so a default set later, or at startup, applies
    /// to the next transaction without anyone copying it over).
    fn isolation(&self) -> &str {
        self.values
            .get("transaction_isolation")
            .or_else(|| self.values.get("default_transaction_isolation"))
            .map_or("read committed", String::as_str)
    }

    /// Whether the current transaction runs at READ COMMITTED (a snapshot per statement).
    pub fn read_committed(&self) -> bool {
        matches!(self.isolation(), "read committed" | "read uncommitted")
    }

    /// At the end of a transaction its isolation level falls back to the session default.
    pub fn end_transaction(&mut self) {
        self.values.remove("transaction_isolation");
    }

    /// The value of a setting, or 42704.
    pub fn get(&self, name: &str) -> Result<(String, String), SqlError> {
        let key = name.to_lowercase();
        if key == "transaction_isolation" {
            return Ok((key, self.isolation().to_string()));
        }
        self.values
            .get(&key)
            .map(|v| (display_name(&key), v.clone()))
            .ok_or_else(|| {
                SqlError::new(
                    "42704",
                    format!("unrecognized configuration parameter \"{name}\""),
                )
            })
    }

    /// All settings (SHOW ALL).
    pub fn all(&self) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = self
            .values
            .iter()
            .filter(|(k, _)| *k != "transaction_isolation")
            .map(|(k, v)| (display_name(k), v.clone()))
            .collect();
        all.push(("transaction_isolation".into(), self.isolation().to_string()));
        all.sort();
        all
    }

    /// Sets a value, validating the few that change behaviour.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), SqlError> {
        let key = name.to_lowercase();
        let value = match key.as_str() {
            "transaction_isolation" | "default_transaction_isolation" => check_isolation(value)?,
            "client_encoding" => {
                let v = value.to_uppercase().replace('-', "");
                if v != "UTF8" && v != "UNICODE" {
                    return Err(SqlError::new(
                        "0A000",
                        format!("client_encoding \"{value}\" is not supported; only UTF8"),
                    ));
                }
                "UTF8".to_string()
            }
            "server_version"
            | "server_version_num"
            | "integer_datetimes"
            | "server_encoding"
            | "max_identifier_length" => {
                return Err(SqlError::new(
                    "55P02",
                    format!("parameter \"{key}\" cannot be changed"),
                ));
            }
            _ => value.to_string(),
        };
        self.values.insert(key, value);
        Ok(())
    }

    /// Back to the default (RESET).
    pub fn reset(&mut self, name: &str) {
        let key = name.to_lowercase();
        if key == "transaction_isolation" {
            self.end_transaction();
        } else if let Some((_, v)) = defaults().into_iter().find(|(k, _)| *k == key) {
            self.values.insert(key, v);
        }
    }
}
