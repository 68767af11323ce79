//! Parsing SQL text with sqlparser's PostgreSQL dialect, errors as SQLSTATE 42601.

use sqlparser::ast::Statement;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use crate::sql::error::SqlError;

/// Parses a string of zero or more statements.
pub fn parse(sql: &str) -> Result<Vec<Statement>, SqlError> {
    if sql.trim().trim_matches(';').trim().is_empty() {
        return Ok(Vec::new());
    }
    let first = sql
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    if matches!(
        first.as_str(),
        "vacuum" | "analyze" | "analyse" | "checkpoint"
    ) {
        // Maintenance statements are no-ops here; PostgreSQL's option forms (VACUUM ANALYZE
        // t, VACUUM (FULL) t) are more than the parser knows, so accept them by keyword.
        let keyword = if first == "vacuum" {
            "VACUUM"
        } else {
            "ANALYZE"
        };
        return Parser::parse_sql(&PostgreSqlDialect {}, keyword)
            .map_err(|e| SqlError::syntax(e.to_string()));
    }
    Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(|e| {
        let msg = e.to_string();
        let msg = msg
            .strip_prefix("sql parser error: ")
            .unwrap_or(&msg)
            .to_string();
        SqlError::syntax(format!("syntax error: {msg}"))
    })
}
