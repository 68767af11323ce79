//! Which SharedMemDatabases one operator installation manages: a label selector.
//!
//! Several operator installations can share a cluster (a team each, a canary next to the
//! stable release, or the e2e suite's in-cluster operator next to host-process ones) as long
//! as no database is managed by two of them: each installation is given a selector, the
//! selectors are chosen disjoint (`shmdb.io/operator=canary` and `shmdb.io/operator!=canary`),
//! and the API server filters the database watch by it. The text syntax is the standard one
//! of `kubectl -l`: comma-separated requirements `key=value`, `key==value`, `key!=value`,
//! `key in (a,b)`, `key notin (a,b)`, `key` and `!key`. An empty selector manages every
//! database.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use kube::core::{Expression, Selector, SelectorExt};
use kube::runtime::watcher;

/// A label selector that cannot be used; the message names the requirement and the rule it
/// breaks, so a mistyped flag is fixed without reading code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("label selector {selector:?}: {reason}")]
pub struct SelectorError {
    /// The whole selector as given.
    pub selector: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The databases this operator manages (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatabaseSelector {
    selector: Selector,
}

impl DatabaseSelector {
    /// Whether every database is managed (no requirement).
    pub fn selects_all(&self) -> bool {
        self.selector.selects_all()
    }

    /// Whether a database with these labels belongs to this operator. The watch is already
    /// filtered by the API server; the reconciler checks again so that an object it is
    /// handed after a relabel is left to the operator that now owns it.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector.matches(labels)
    }

    /// The watcher configuration of the SharedMemDatabase watch: the API server sends only
    /// matching databases (and a deletion when a database stops matching).
    pub fn watcher_config(&self) -> watcher::Config {
        let config = watcher::Config::default();
        if self.selects_all() {
            config
        } else {
            config.labels_from(&self.selector)
        }
    }
}

impl fmt::Display for DatabaseSelector {
    /// The selector in the API's syntax (what is sent as `labelSelector`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.selector.fmt(f)
    }
}

impl FromStr for DatabaseSelector {
    type Err = SelectorError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = |reason: String| SelectorError {
            selector: text.to_string(),
            reason,
        };
        let mut selector = Selector::default();
        if text.trim().is_empty() {
            return Ok(DatabaseSelector { selector });
        }
        for requirement in split_requirements(text).map_err(fail)? {
            selector.extend(parse_requirement(requirement).map_err(fail)?);
        }
        Ok(DatabaseSelector { selector })
    }
}

/// Splits at the commas that separate requirements (not those inside a `(a,b)` set).
fn split_requirements(text: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0u32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' if depth == 0 => depth = 1,
            '(' => return Err("nested parentheses".to_string()),
            ')' if depth == 1 => depth = 0,
            ')' => return Err("a ')' without its '('".to_string()),
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("a '(' without its ')'".to_string());
    }
    parts.push(&text[start..]);
    Ok(parts)
}

fn parse_requirement(requirement: &str) -> Result<Expression, String> {
    let req = requirement.trim();
    if req.is_empty() {
        return Err("an empty requirement (a stray comma?)".to_string());
    }
    if let Some(key) = req.strip_prefix('!') {
        let key = key.trim();
        check_key(key)?;
        return Ok(Expression::DoesNotExist(key.to_string()));
    }
    if let Some(open) = req.find('(') {
        let Some(inside) = req[open + 1..].strip_suffix(')') else {
            return Err(format!("{req:?}: nothing may follow the closing ')'"));
        };
        let head: Vec<&str> = req[..open].split_whitespace().collect();
        let [key, operator] = head.as_slice() else {
            return Err(format!(
                "{req:?}: expected `key in (values)` or `key notin (values)`"
            ));
        };
        check_key(key)?;
        let mut values = std::collections::BTreeSet::new();
        for value in inside.split(',') {
            let value = value.trim();
            check_value(value)?;
            values.insert(value.to_string());
        }
        return match *operator {
            "in" => Ok(Expression::In(key.to_string(), values)),
            "notin" => Ok(Expression::NotIn(key.to_string(), values)),
            other => Err(format!(
                "{req:?}: unknown set operator {other:?} (use in or notin)"
            )),
        };
    }
    for (token, make) in [
        (
            "!=",
            Expression::NotEqual as fn(String, String) -> Expression,
        ),
        ("==", Expression::Equal),
        ("=", Expression::Equal),
    ] {
        if let Some((key, value)) = req.split_once(token) {
            let (key, value) = (key.trim(), value.trim());
            check_key(key)?;
            check_value(value)?;
            return Ok(make(key.to_string(), value.to_string()));
        }
    }
    if req.contains(['<', '>']) {
        return Err(format!(
            "{req:?}: numeric comparisons are not label-selector operators"
        ));
    }
    check_key(req)?;
    Ok(Expression::Exists(req.to_string()))
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of up to 63
/// characters (the API server refuses anything else).
fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let valid = !prefix.is_empty()
            && prefix.len() <= 253
            && prefix.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !valid {
            return Err(format!(
                "key {key:?}: the prefix before '/' must be a DNS subdomain (lower-case letters, digits, '-', '.')"
            ));
        }
    }
    if name.is_empty() || !is_label_name(name) {
        return Err(format!(
            "key {key:?}: the name must be 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// A label value: empty, or what a key's name may be.
fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_name(value) {
        Ok(())
    } else {
        Err(format!(
            "value {value:?}: must be empty or 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ))
    }
}

fn is_label_name(s: &str) -> bool {
    let edge = |c: char| c.is_ascii_alphanumeric();
    s.len() <= 63
        && s.starts_with(edge)
        && s.ends_with(edge)
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse(text: &str) -> DatabaseSelector {
        text.parse()
            .unwrap_or_else(|e| panic!("{text:?} should parse: {e}"))
    }

    #[test]
    fn empty_selects_every_database() {
        for text in ["", "  "] {
            let s = parse(text);
            assert!(s.selects_all());
            assert!(s.matches(&labels(&[])));
            assert!(s.matches(&labels(&[("shmdb.io/operator", "x")])));
            assert_eq!(s.to_string(), "");
        }
    }

    #[test]
    fn every_operator_of_the_syntax_parses_and_round_trips() {
        let cases = [
            (
                "shmdb.io/operator=in-cluster",
                "shmdb.io/operator=in-cluster",
            ),
            (
                "shmdb.io/operator == in-cluster",
                "shmdb.io/operator=in-cluster",
            ),
            (
                "shmdb.io/operator!=in-cluster",
                "shmdb.io/operator!=in-cluster",
            ),
            ("team in (a, b)", "team in (a,b)"),
            ("team notin (a,b)", "team notin (a,b)"),
            ("team", "team"),
            ("! team", "!team"),
            (
                "env=prod, team in (a,b),!canary",
                "env=prod,team in (a,b),!canary",
            ),
            ("empty=", "empty="),
        ];
        for (text, shown) in cases {
            let s = parse(text);
            assert!(!s.selects_all(), "{text}");
            assert_eq!(s.to_string(), shown, "{text}");
            assert_eq!(parse(&s.to_string()), s, "{text} does not round-trip");
        }
    }

    #[test]
    fn matching_follows_the_api_servers_rules() {
        let in_cluster = parse("shmdb.io/operator=in-cluster");
        let host = parse("shmdb.io/operator!=in-cluster");
        let owned = labels(&[("shmdb.io/operator", "in-cluster")]);
        let other = labels(&[("shmdb.io/operator", "team-a")]);
        let unlabelled = labels(&[("app", "x")]);
        assert!(in_cluster.matches(&owned));
        assert!(!in_cluster.matches(&other));
        assert!(!in_cluster.matches(&unlabelled));
        // The complementary selector takes everything else, unlabelled databases included:
        // together the two manage every database exactly once.
        assert!(!host.matches(&owned));
        assert!(host.matches(&other));
        assert!(host.matches(&unlabelled));

        let sets = parse("team in (a,b),!canary");
        assert!(sets.matches(&labels(&[("team", "a")])));
        assert!(!sets.matches(&labels(&[("team", "c")])));
        assert!(!sets.matches(&labels(&[("team", "a"), ("canary", "")])));
        assert!(parse("team notin (a)").matches(&labels(&[])));
        assert!(parse("team").matches(&labels(&[("team", "")])));
        assert!(!parse("team").matches(&labels(&[])));
    }

    #[test]
    fn bad_selectors_are_refused_with_the_reason() {
        let cases = [
            ("a=b,", "empty requirement"),
            (",a", "empty requirement"),
            ("team in (a,b", "without its ')'"),
            ("team in a,b)", "without its '('"),
            ("team in ((a))", "nested"),
            ("team in (a) x", "nothing may follow"),
            ("team within (a)", "unknown set operator"),
            ("in (a)", "expected `key in (values)`"),
            ("=b", "key \"\""),
            ("-bad=b", "key \"-bad\""),
            ("Upper.Case/x=b", "DNS subdomain"),
            ("/x=b", "DNS subdomain"),
            ("a=b c", "value \"b c\""),
            ("a=-b", "value \"-b\""),
        ];
        for (text, reason) in cases {
            let err = text
                .parse::<DatabaseSelector>()
                .expect_err(&format!("{text:?} should be refused"));
            assert_eq!(err.selector, text);
            assert!(
                err.to_string().contains(reason),
                "{text:?}: {err} does not say {reason:?}"
            );
        }
        let long = format!("a={}", "x".repeat(64));
        assert!(long.parse::<DatabaseSelector>().is_err());
        assert!("replicas>3".parse::<DatabaseSelector>().is_err());
    }

    #[test]
    fn the_watch_asks_the_api_server_to_filter() {
        let all = DatabaseSelector::default().watcher_config();
        assert_eq!(all.label_selector, None);
        let one = parse("shmdb.io/operator=in-cluster").watcher_config();
        assert_eq!(
            one.label_selector.as_deref(),
            Some("shmdb.io/operator=in-cluster")
        );
    }
}
