//! COPY … FROM STDIN: the text and CSV formats, inserted like a multi-row INSERT.

use sqlparser::ast::{self, CopyOption, CopySource, CopyTarget, Statement};

use crate::datum::Datum;
use crate::sql::bind::{Planner, ident, object_name};
use crate::sql::dml::{InsertPlan, InsertSource};
use crate::sql::error::SqlError;
use crate::sql::exec::Exec;
use crate::sql::expr::Expr;
use crate::sql::session::{Session, TxStatus};

/// Splits one line of the text format into fields (`\N` = NULL, backslash escapes).
fn text_fields(line: &str, delimiter: char, null: &str) -> Vec<Option<String>> {
    line.split(delimiter)
        .map(|raw| {
            if raw == null {
                return None;
            }
            let mut out = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c != '\\' {
                    out.push(c);
                    continue;
                }
                match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some('b') => out.push('\u{8}'),
                    Some('f') => out.push('\u{c}'),
                    Some('v') => out.push('\u{b}'),
                    Some(other) => out.push(other),
                    None => {}
                }
            }
            Some(out)
        })
        .collect()
}

/// Splits one CSV line (quotes with doubled-quote escapes; an unquoted empty field is NULL).
fn csv_fields(line: &str, delimiter: char) -> Vec<Option<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut was_quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    cur.push('"');
                    chars.next();
                } else {
                    quoted = false;
                }
            } else {
                cur.push(c);
            }
        } else if c == '"' {
            quoted = true;
            was_quoted = true;
        } else if c == delimiter {
            out.push(if cur.is_empty() && !was_quoted {
                None
            } else {
                Some(std::mem::take(&mut cur))
            });
            was_quoted = false;
        } else {
            cur.push(c);
        }
    }
    out.push(if cur.is_empty() && !was_quoted {
        None
    } else {
        Some(cur)
    });
    out
}

/// PostgreSQL accepts `ON`/`OFF` (and `1`/`0`) for boolean COPY options (pgbench sends
/// `WITH (FREEZE ON)`); the parser takes only `TRUE`/`FALSE`. Rewrites such values inside
/// the parenthesized option list and nothing else, so a table or column named `on` is left
/// alone.
pub(crate) fn boolean_options_as_literals(statement: &str) -> String {
    let lower = statement.to_ascii_lowercase();
    let Some(open) = lower
        .rfind('(')
        .filter(|&i| lower[..i].trim_end().ends_with("with"))
    else {
        return statement.to_string();
    };
    let Some(close) = lower[open..].find(')').map(|i| open + i) else {
        return statement.to_string();
    };
    // Split on commas outside quotes, keeping every piece's text as it was.
    let segment = &statement[open + 1..close];
    let mut pieces = Vec::new();
    let (mut start, mut quote) = (0, None);
    for (i, c) in segment.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, ',') => {
                pieces.push(&segment[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    pieces.push(&segment[start..]);
    let options: Vec<String> = pieces
        .into_iter()
        .map(
            |option| match option.split_whitespace().collect::<Vec<_>>().as_slice() {
                [name, value] if name.chars().all(|c| c.is_ascii_alphabetic() || c == '_') => {
                    match value.to_ascii_lowercase().as_str() {
                        "on" | "1" => format!(" {name} true"),
                        "off" | "0" => format!(" {name} false"),
                        _ => option.to_string(),
                    }
                }
                _ => option.to_string(),
            },
        )
        .collect();
    format!(
        "{}({}){}",
        &statement[..open],
        options.join(","),
        &statement[close + 1..]
    )
}

impl Session {
    /// Parses the COPY statement and inserts the data in the session's transaction.
    pub(crate) async fn copy_in(&mut self, statement: &str, data: &[u8]) -> Result<u64, SqlError> {
        if self.status == TxStatus::Failed {
            return Err(SqlError::in_failed_transaction());
        }
        let stmts = crate::sql::parse::parse(&boolean_options_as_literals(statement))?;
        let Some(Statement::Copy {
            source,
            to: false,
            target: CopyTarget::Stdin,
            options,
            ..
        }) = stmts.first()
        else {
            return Err(SqlError::unsupported("COPY other than FROM STDIN"));
        };
        let CopySource::Table {
            table_name,
            columns,
        } = source
        else {
            return Err(SqlError::unsupported("COPY from a query"));
        };
        let mut csv = false;
        let mut delimiter = None;
        let mut null = None;
        let mut header = false;
        for o in options {
            match o {
                CopyOption::Format(f) => csv = f.value.eq_ignore_ascii_case("csv"),
                CopyOption::Delimiter(c) => delimiter = Some(*c),
                CopyOption::Null(s) => null = Some(s.clone()),
                CopyOption::Header(h) => header = *h,
                _ => {}
            }
        }
        let delimiter = delimiter.unwrap_or(if csv { ',' } else { '\t' });
        let null = null.unwrap_or_else(|| {
            if csv {
                String::new()
            } else {
                "\\N".to_string()
            }
        });
        let text = std::str::from_utf8(data)
            .map_err(|_| SqlError::new("22021", "invalid byte sequence for encoding \"UTF8\""))?;
        let r = self
            .copy_rows(table_name, columns, text, csv, delimiter, &null, header)
            .await;
        if r.is_err() {
            self.fail_after_error().await;
        }
        r
    }

    #[allow(clippy::too_many_arguments)]
    async fn copy_rows(
        &mut self,
        table: &ast::ObjectName,
        columns: &[ast::Ident],
        text: &str,
        csv: bool,
        delimiter: char,
        null: &str,
        header: bool,
    ) -> Result<u64, SqlError> {
        let catalog = self.ensure_txn().await?;
        let meta = catalog.table(&object_name(table))?;
        let targets: Vec<usize> = if columns.is_empty() {
            meta.visible().map(|(i, _)| i).collect()
        } else {
            columns
                .iter()
                .map(|c| {
                    let n = ident(c);
                    meta.column(&n).ok_or_else(|| {
                        SqlError::new(
                            "42703",
                            format!(
                                "column \"{n}\" of relation \"{}\" does not exist",
                                meta.name
                            ),
                        )
                    })
                })
                .collect::<Result<_, _>>()?
        };
        let mut rows = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if (header && n == 0) || line == "\\." {
                continue;
            }
            if line.is_empty() && targets.len() > 1 {
                continue;
            }
            let fields = if csv {
                csv_fields(line, delimiter)
            } else {
                text_fields(line, delimiter, null)
            };
            if fields.len() != targets.len() {
                return Err(SqlError::new(
                    "22P04",
                    format!(
                        "COPY {}, line {}: expected {} columns, got {}",
                        meta.name,
                        n + 1,
                        targets.len(),
                        fields.len()
                    ),
                ));
            }
            rows.push(
                fields
                    .into_iter()
                    .map(|f| {
                        Some(Expr::Const(
                            f.filter(|s| !csv || s != null)
                                .map_or(Datum::Null, Datum::Text),
                        ))
                    })
                    .collect(),
            );
        }
        let mut planner = Planner::new(&catalog, &[]);
        let empty = crate::sql::bind::Scope::default();
        let mut defaults = Vec::new();
        for c in &meta.columns {
            defaults.push(match &c.default {
                Some(t) => {
                    let e =
                        sqlparser::parser::Parser::new(&sqlparser::dialect::PostgreSqlDialect {})
                            .try_with_sql(t)
                            .and_then(|mut p| p.parse_expr())
                            .map_err(|e| SqlError::internal(e.to_string()))?;
                    Some(planner.bind(&e, &empty)?.0)
                }
                None => None,
            });
        }
        let plan = InsertPlan {
            table: meta.clone(),
            targets,
            source: InsertSource::Values(rows),
            defaults,
            do_nothing: false,
            returning: None,
        };
        let engine = self.engine.clone();
        let now = self.txn_now;
        let Some(tx) = self.txn.as_mut() else {
            return Err(SqlError::internal("no transaction"));
        };
        let mut ex = Exec {
            tx,
            params: &[],
            subs: Vec::new(),
            now,
            catalog: &catalog,
            cancel: &self.cancel,
        };
        let (n, _) = ex.insert(&plan, &engine.engine, &engine.catalog).await?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::boolean_options_as_literals as fix;

    #[test]
    fn on_and_off_become_boolean_literals_only_inside_the_options() {
        assert_eq!(
            fix("copy on from stdin with (freeze on)"),
            "copy on from stdin with ( freeze true)"
        );
        assert_eq!(
            fix("COPY t FROM STDIN WITH (FORMAT csv, HEADER OFF, DELIMITER ',')"),
            "COPY t FROM STDIN WITH (FORMAT csv, HEADER false, DELIMITER ',')"
        );
        assert_eq!(fix("COPY t FROM STDIN"), "COPY t FROM STDIN");
        assert_eq!(
            fix("COPY t (a, b) FROM STDIN WITH (NULL 'on')"),
            "COPY t (a, b) FROM STDIN WITH (NULL 'on')"
        );
    }
}
