//! One authenticated connection: the simple and extended query protocols over a SQL
//! [`Session`], with named/unnamed statements and portals, row-limited Execute, COPY, and
//! PostgreSQL's error recovery (after an error in an extended-query batch, everything up to
//! the next Sync is skipped; the connection itself always stays usable).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::data::{
    DataRow, FieldDescription, NoData, ParameterDescription, RowDescription,
};
use pgwire::messages::extendedquery::{
    BindComplete, CloseComplete, ParseComplete, PortalSuspended,
};
use pgwire::messages::response::{
    CommandComplete, EmptyQueryResponse, NoticeResponse, ReadyForQuery, TransactionStatus,
};
use pgwire::messages::startup::{BackendKeyData, ParameterStatus, SecretKey};
use tracing::{debug, warn};

use crate::datum::Datum;
use crate::pg::cancel::CancelKey;
use crate::pg::conn::{Conn, ConnError};
use crate::pg::copy::{self, CopyOutcome};
use crate::pg::frontend::{FrontendMessage, ProtocolError, Target};
use crate::pg::metrics::PgMetrics;
use crate::pg::types::{self, Format};
use crate::sql::{Column, PgType, Prepared, QueryOutput, Session, SqlError, TxStatus};

/// The server version we report. Drivers parse it to pick features; psql picks its catalog
/// queries by it. 15 matches the PostgreSQL we compare against (DESIGN.md).
pub const SERVER_VERSION: &str = "15.0";

/// Flush the write buffer once it holds this much, while streaming rows.
const FLUSH_THRESHOLD: usize = 256 * 1024;

/// A prepared statement of this connection.
#[derive(Debug, Clone)]
struct Statement {
    prepared: Arc<Prepared>,
    /// `COPY … FROM STDIN`, run by the copy-in sub-protocol rather than the engine's execute.
    copy: bool,
}

/// Where a portal is in its execution.
#[derive(Debug)]
enum PortalState {
    /// Bound, not executed yet.
    Ready,
    /// Executed; rows not yet sent to the client (row-limited Execute).
    Rows {
        columns: Vec<Column>,
        rows: VecDeque<Vec<Datum>>,
        tag: String,
        suspended: bool,
    },
    /// Finished; a further Execute returns no rows.
    Done { tag: String },
}

/// A bound statement with its parameters.
#[derive(Debug)]
struct Portal {
    statement: Statement,
    params: Vec<Datum>,
    result_formats: Vec<i16>,
    state: PortalState,
}

/// An authenticated client connection and its session.
pub struct Connection {
    conn: Conn,
    session: Session,
    statements: HashMap<String, Statement>,
    portals: HashMap<String, Portal>,
    metrics: PgMetrics,
    /// After an error in an extended-query batch: skip messages until Sync.
    skip_until_sync: bool,
    /// Reported parameters as last sent to the client.
    reported: HashMap<String, String>,
    _cancel_key: CancelKey,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("statements", &self.statements.len())
            .field("portals", &self.portals.len())
            .finish_non_exhaustive()
    }
}

fn tx_status(status: TxStatus) -> TransactionStatus {
    match status {
        TxStatus::Idle => TransactionStatus::Idle,
        TxStatus::InBlock => TransactionStatus::Transaction,
        TxStatus::Failed => TransactionStatus::Error,
    }
}

/// The fixed size of a type's values (negative = variable), for RowDescription.
fn type_size(ty: PgType) -> i16 {
    match ty {
        PgType::Bool => 1,
        PgType::Int2 => 2,
        PgType::Int4 | PgType::Float4 | PgType::Date => 4,
        PgType::Int8 | PgType::Float8 | PgType::Timestamp => 8,
        PgType::Unknown => -2,
        _ => -1,
    }
}

fn row_description(columns: &[Column], formats: &[Format]) -> PgWireBackendMessage {
    let fields = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            FieldDescription::new(
                c.name.clone(),
                0,
                0,
                c.pg_type.oid(),
                type_size(c.pg_type),
                -1,
                formats.get(i).copied().unwrap_or(Format::Text).code(),
            )
        })
        .collect();
    PgWireBackendMessage::RowDescription(RowDescription::new(fields))
}

/// The result formats of a portal's columns; codes that do not fit fall back to text (the
/// count was checked at Bind against the described columns).
fn result_formats(codes: &[i16], n: usize) -> Vec<Format> {
    types::formats_for(codes, n).unwrap_or_else(|_| vec![Format::Text; n])
}

impl Connection {
    /// A connection after successful authentication.
    pub fn new(conn: Conn, session: Session, metrics: PgMetrics, cancel_key: CancelKey) -> Self {
        Connection {
            conn,
            session,
            statements: HashMap::new(),
            portals: HashMap::new(),
            metrics,
            skip_until_sync: false,
            reported: HashMap::new(),
            _cancel_key: cancel_key,
        }
    }

    /// Applies startup parameters the session keeps as settings, sends ParameterStatus
    /// values, BackendKeyData and the first ReadyForQuery.
    pub async fn greet(
        &mut self,
        user: &str,
        startup_params: &[(String, String)],
        pid: i32,
        secret: i32,
    ) -> Result<(), ConnError> {
        let app = startup_params
            .iter()
            .find(|(k, _)| k == "application_name")
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        if !app.is_empty() {
            // Best effort: an engine without the setting still reports it from here.
            let quoted = app.replace('\'', "''");
            let _ = self
                .session
                .simple_query(&format!("SET application_name = '{quoted}'"))
                .await;
            self.session.take_notices();
        }
        let statuses = [
            ("server_version", SERVER_VERSION),
            ("server_encoding", "UTF8"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, MDY"),
            ("IntervalStyle", "postgres"),
            ("TimeZone", "UTC"),
            ("integer_datetimes", "on"),
            ("standard_conforming_strings", "on"),
            ("is_superuser", "on"),
            ("session_authorization", user),
            ("application_name", app),
            ("default_transaction_read_only", "off"),
            ("in_hot_standby", "off"),
        ];
        for (name, default) in statuses {
            let value = if name == "session_authorization" || name == "application_name" {
                default.to_owned()
            } else {
                self.parameter_value(name, default)
            };
            self.conn
                .send(PgWireBackendMessage::ParameterStatus(ParameterStatus::new(
                    name.to_owned(),
                    value.clone(),
                )))?;
            self.reported.insert(name.to_owned(), value);
        }
        self.conn
            .send(PgWireBackendMessage::BackendKeyData(BackendKeyData::new(
                pid,
                SecretKey::I32(secret),
            )))?;
        self.ready_for_query().await
    }

    async fn ready_for_query(&mut self) -> Result<(), ConnError> {
        self.conn
            .send(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(
                tx_status(self.session.status()),
            )))?;
        self.conn.flush().await
    }

    /// Sends the NOTICEs the engine produced (before the statement's CommandComplete).
    fn send_notices(&mut self) -> Result<(), ConnError> {
        for notice in self.session.take_notices() {
            // The engine's notices read "WARNING: …" / "NOTICE: …"; the severity travels
            // in its own field (clients print it before the message).
            let (severity, code, message) = match notice.split_once(": ") {
                Some(("WARNING", m)) => ("WARNING", "01000", m.to_owned()),
                Some(("NOTICE", m)) => ("NOTICE", "00000", m.to_owned()),
                _ => ("NOTICE", "00000", notice),
            };
            self.conn
                .send(PgWireBackendMessage::NoticeResponse(NoticeResponse::new(
                    vec![
                        (b'S', severity.to_owned()),
                        (b'V', severity.to_owned()),
                        (b'C', code.to_owned()),
                        (b'M', message),
                    ],
                )))?;
        }
        Ok(())
    }

    /// The value of a reported parameter: the session's setting, else our default.
    fn parameter_value(&self, name: &str, default: &str) -> String {
        self.session
            .parameter(name)
            .unwrap_or_else(|| default.to_owned())
    }

    /// After SET/RESET, tells the client about reported parameters that changed (as
    /// PostgreSQL does for GUC_REPORT settings; drivers track client_encoding and DateStyle).
    fn report_changed_parameters(&mut self) -> Result<(), ConnError> {
        let names: Vec<String> = self.reported.keys().cloned().collect();
        for name in names {
            if let Some(value) = self.session.parameter(&name)
                && self.reported.get(&name) != Some(&value)
            {
                self.conn
                    .send(PgWireBackendMessage::ParameterStatus(ParameterStatus::new(
                        name.clone(),
                        value.clone(),
                    )))?;
                self.reported.insert(name, value);
            }
        }
        Ok(())
    }

    fn send_sql_error(&mut self, e: &SqlError) -> Result<(), ConnError> {
        self.send_notices()?;
        self.conn
            .send_error("ERROR", e.code, &e.message, e.detail.as_deref())
    }

    /// Serves the connection until the client leaves or breaks the protocol.
    pub async fn run(mut self) -> Result<(), ConnError> {
        loop {
            let msg = match self.conn.read_message().await {
                Ok(Some(m)) => m,
                Ok(None) => return Ok(()),
                Err(ConnError::Protocol(e)) => {
                    debug!(error = %e, "protocol violation; closing the connection");
                    self.conn
                        .send_error("FATAL", ProtocolError::SQLSTATE, &e.to_string(), None)?;
                    self.conn.shutdown().await;
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            if self.skip_until_sync
                && !matches!(msg, FrontendMessage::Sync | FrontendMessage::Terminate)
            {
                continue;
            }
            match msg {
                FrontendMessage::Query(sql) => {
                    if !self.simple_query(&sql).await? {
                        return Ok(());
                    }
                    self.ready_for_query().await?;
                }
                FrontendMessage::Parse {
                    name,
                    query,
                    param_oids,
                } => {
                    let r = self.parse(name, query, &param_oids).await;
                    self.extended_result(r)?;
                }
                FrontendMessage::Bind {
                    portal,
                    statement,
                    param_formats,
                    params,
                    result_formats,
                } => {
                    let r = self.bind(portal, &statement, &param_formats, &params, result_formats);
                    self.extended_result(r)?;
                }
                FrontendMessage::Describe { target, name } => {
                    let r = self.describe(target, &name);
                    self.extended_result(r)?;
                }
                FrontendMessage::Execute { portal, max_rows } => {
                    match self.execute(&portal, max_rows).await? {
                        Some(r) => self.extended_result(r)?,
                        None => return Ok(()),
                    }
                }
                FrontendMessage::Close { target, name } => {
                    match target {
                        Target::Statement => {
                            self.statements.remove(&name);
                        }
                        Target::Portal => {
                            self.portals.remove(&name);
                        }
                    }
                    self.conn
                        .send(PgWireBackendMessage::CloseComplete(CloseComplete::new()))?;
                }
                FrontendMessage::Sync => {
                    self.skip_until_sync = false;
                    // The unnamed portal does not survive the end of the batch's transaction.
                    self.portals.remove("");
                    if let Err(e) = self.session.sync().await {
                        self.send_sql_error(&e)?;
                    }
                    self.ready_for_query().await?;
                }
                FrontendMessage::Flush => self.conn.flush().await?,
                FrontendMessage::Terminate => return Ok(()),
                // Outside COPY these are ignored, as PostgreSQL does (a client may still be
                // sending data after the COPY failed).
                FrontendMessage::CopyData(_)
                | FrontendMessage::CopyDone
                | FrontendMessage::CopyFail(_) => {}
                FrontendMessage::Password(_) => {
                    self.conn.send_error(
                        "FATAL",
                        ProtocolError::SQLSTATE,
                        "unexpected password message after authentication",
                        None,
                    )?;
                    self.conn.shutdown().await;
                    return Ok(());
                }
            }
        }
    }

    /// Reports an extended-protocol step's error and enters skip-until-Sync.
    fn extended_result(&mut self, r: Result<(), SqlError>) -> Result<(), ConnError> {
        if let Err(e) = r {
            self.send_sql_error(&e)?;
            self.skip_until_sync = true;
        }
        Ok(())
    }

    /// Runs a simple Query message. Returns false if the client went away during COPY.
    async fn simple_query(&mut self, sql: &str) -> Result<bool, ConnError> {
        if copy::is_copy_from_stdin(sql) {
            return match self.copy_in(sql).await? {
                Some(Ok(())) => Ok(true),
                Some(Err(e)) => {
                    self.send_sql_error(&e)?;
                    Ok(true)
                }
                None => Ok(false),
            };
        }
        // A cancel that arrived while idle must not hit the next statement.
        self.session.cancelled();
        let start = Instant::now();
        let results = self.session.simple_query(sql).await;
        let elapsed = start.elapsed().as_secs_f64();
        if results.is_empty() {
            self.conn.send(PgWireBackendMessage::EmptyQueryResponse(
                EmptyQueryResponse::new(),
            ))?;
        }
        for result in results {
            match result {
                Ok(output) => {
                    let tag = self.send_output(output, None).await?;
                    self.metrics
                        .statement("simple", true, elapsed, tag.as_deref());
                }
                Err(e) => {
                    self.metrics.statement("simple", false, elapsed, None);
                    self.send_sql_error(&e)?;
                }
            }
        }
        Ok(true)
    }

    /// Sends notices, then CommandComplete; after SET/RESET also changed parameters.
    fn complete(&mut self, tag: String) -> Result<(), ConnError> {
        self.send_notices()?;
        let set = tag == "SET" || tag == "RESET";
        self.conn
            .send(PgWireBackendMessage::CommandComplete(CommandComplete::new(
                tag,
            )))?;
        if set {
            self.report_changed_parameters()?;
        }
        Ok(())
    }

    /// Sends a whole statement output in text format (simple protocol). Returns the tag.
    async fn send_output(
        &mut self,
        output: QueryOutput,
        formats: Option<&[Format]>,
    ) -> Result<Option<String>, ConnError> {
        match output {
            QueryOutput::Rows { columns, rows, tag } => {
                let text = vec![Format::Text; columns.len()];
                let formats = formats.unwrap_or(&text);
                self.conn.send(row_description(&columns, formats))?;
                if let Err(e) = self.send_rows(&columns, rows, formats).await {
                    self.send_sql_error(&e)?;
                    return Ok(None);
                }
                self.complete(tag.clone())?;
                Ok(Some(tag))
            }
            QueryOutput::Command { tag } => {
                self.complete(tag.clone())?;
                Ok(Some(tag))
            }
            QueryOutput::Empty => {
                self.send_notices()?;
                self.conn.send(PgWireBackendMessage::EmptyQueryResponse(
                    EmptyQueryResponse::new(),
                ))?;
                Ok(None)
            }
        }
    }

    /// Sends DataRows. A value that cannot be encoded ends the stream with its error.
    async fn send_rows(
        &mut self,
        columns: &[Column],
        rows: impl IntoIterator<Item = Vec<Datum>>,
        formats: &[Format],
    ) -> Result<(), SqlError> {
        for row in rows {
            let mut data = BytesMut::new();
            for (i, value) in row.iter().enumerate() {
                let ty = columns.get(i).map_or(PgType::Text, |c| c.pg_type);
                let format = formats.get(i).copied().unwrap_or(Format::Text);
                types::put_field(&mut data, value, ty, format)?;
            }
            let field_count = i16::try_from(row.len())
                .map_err(|_| SqlError::new("54011", "too many columns in a row"))?;
            self.conn
                .send(PgWireBackendMessage::DataRow(DataRow::new(
                    data,
                    field_count,
                )))
                .map_err(|e| SqlError::internal(e.to_string()))?;
            if self.conn_buffered() > FLUSH_THRESHOLD {
                self.conn
                    .flush()
                    .await
                    .map_err(|e| SqlError::new("08006", e.to_string()))?;
            }
        }
        Ok(())
    }

    fn conn_buffered(&self) -> usize {
        self.conn.buffered_output()
    }

    /// Runs the copy-in sub-protocol for `statement`. `None` if the client went away;
    /// otherwise the statement's result (CommandComplete already sent on success).
    async fn copy_in(
        &mut self,
        statement: &str,
    ) -> Result<Option<Result<(), SqlError>>, ConnError> {
        let start = Instant::now();
        let outcome = copy::receive(&mut self.conn).await?;
        let result = match outcome {
            CopyOutcome::Closed => return Ok(None),
            CopyOutcome::Failed(e) => Err(e),
            CopyOutcome::Data(data) => {
                self.session.cancelled();
                self.session.copy_from_text(statement, &data).await
            }
        };
        let ok = result.is_ok();
        self.metrics
            .statement("copy", ok, start.elapsed().as_secs_f64(), None);
        Ok(Some(match result {
            Ok(n) => {
                self.complete(format!("COPY {n}"))?;
                Ok(())
            }
            Err(e) => Err(e),
        }))
    }

    async fn parse(
        &mut self,
        name: String,
        query: String,
        param_oids: &[u32],
    ) -> Result<(), SqlError> {
        if !name.is_empty() && self.statements.contains_key(&name) {
            return Err(SqlError::new(
                "42P05",
                format!("prepared statement \"{name}\" already exists"),
            ));
        }
        let statement = if copy::is_copy_from_stdin(&query) {
            Statement {
                prepared: Arc::new(Prepared {
                    sql: query,
                    param_types: Vec::new(),
                    columns: Vec::new(),
                }),
                copy: true,
            }
        } else {
            let hints: Vec<Option<PgType>> = param_oids
                .iter()
                .map(|&oid| {
                    if oid == 0 {
                        None
                    } else {
                        PgType::from_oid(oid)
                    }
                })
                .collect();
            let prepared = self.session.prepare(&query, &hints).await?;
            Statement {
                prepared: Arc::new(prepared),
                copy: false,
            }
        };
        self.statements.insert(name, statement);
        self.conn
            .send(PgWireBackendMessage::ParseComplete(ParseComplete::new()))
            .map_err(|e| SqlError::internal(e.to_string()))
    }

    fn bind(
        &mut self,
        portal: String,
        statement: &str,
        param_formats: &[i16],
        params: &[Option<bytes::Bytes>],
        result_codes: Vec<i16>,
    ) -> Result<(), SqlError> {
        let stmt = self.statements.get(statement).cloned().ok_or_else(|| {
            SqlError::new(
                "26000",
                format!("prepared statement \"{statement}\" does not exist"),
            )
        })?;
        let expected = stmt.prepared.param_types.len();
        if params.len() != expected {
            return Err(SqlError::new(
                "08P01",
                format!(
                    "bind message supplies {} parameters, but prepared statement \"{statement}\" requires {expected}",
                    params.len()
                ),
            ));
        }
        if !portal.is_empty() && self.portals.contains_key(&portal) {
            return Err(SqlError::new(
                "42P03",
                format!("portal \"{portal}\" already exists"),
            ));
        }
        let formats = types::formats_for(param_formats, params.len())?;
        let mut values = Vec::with_capacity(params.len());
        for ((value, format), ty) in params.iter().zip(&formats).zip(&stmt.prepared.param_types) {
            values.push(match (value, format) {
                (None, _) => Datum::Null,
                (Some(v), Format::Text) => types::from_text(v, *ty)?,
                (Some(v), Format::Binary) => types::from_binary(v, *ty)?,
            });
        }
        // Check the result format count now, so a bad Bind fails at Bind like PostgreSQL.
        let columns = stmt.prepared.columns.len();
        if result_codes.len() > 1 && result_codes.len() != columns {
            return Err(SqlError::new(
                "08P01",
                format!(
                    "bind message has {} result formats but query has {columns} columns",
                    result_codes.len()
                ),
            ));
        }
        types::formats_for(&result_codes, columns)?;
        self.portals.insert(
            portal,
            Portal {
                statement: stmt,
                params: values,
                result_formats: result_codes,
                state: PortalState::Ready,
            },
        );
        self.conn
            .send(PgWireBackendMessage::BindComplete(BindComplete::new()))
            .map_err(|e| SqlError::internal(e.to_string()))
    }

    fn describe(&mut self, target: Target, name: &str) -> Result<(), SqlError> {
        let enc = |e: ConnError| SqlError::internal(e.to_string());
        match target {
            Target::Statement => {
                let stmt = self.statements.get(name).cloned().ok_or_else(|| {
                    SqlError::new(
                        "26000",
                        format!("prepared statement \"{name}\" does not exist"),
                    )
                })?;
                let oids = stmt.prepared.param_types.iter().map(|t| t.oid()).collect();
                self.conn
                    .send(PgWireBackendMessage::ParameterDescription(
                        ParameterDescription::new(oids),
                    ))
                    .map_err(enc)?;
                self.describe_columns(&stmt.prepared.columns, &[])
                    .map_err(enc)
            }
            Target::Portal => {
                let portal = self.portals.get(name).ok_or_else(|| {
                    SqlError::new("34000", format!("portal \"{name}\" does not exist"))
                })?;
                let columns = portal.statement.prepared.columns.clone();
                let codes = portal.result_formats.clone();
                self.describe_columns(&columns, &codes).map_err(enc)
            }
        }
    }

    fn describe_columns(&mut self, columns: &[Column], codes: &[i16]) -> Result<(), ConnError> {
        if columns.is_empty() {
            self.conn.send(PgWireBackendMessage::NoData(NoData::new()))
        } else {
            let formats = result_formats(codes, columns.len());
            self.conn.send(row_description(columns, &formats))
        }
    }

    /// Execute: runs the portal (once) and sends up to `max_rows` rows. The outer `None`
    /// means the client went away (during COPY).
    async fn execute(
        &mut self,
        name: &str,
        max_rows: i32,
    ) -> Result<Option<Result<(), SqlError>>, ConnError> {
        let Some(mut portal) = self.portals.remove(name) else {
            return Ok(Some(Err(SqlError::new(
                "34000",
                format!("portal \"{name}\" does not exist"),
            ))));
        };
        let result = self.execute_portal(&mut portal, max_rows).await;
        self.portals.insert(name.to_owned(), portal);
        result
    }

    async fn execute_portal(
        &mut self,
        portal: &mut Portal,
        max_rows: i32,
    ) -> Result<Option<Result<(), SqlError>>, ConnError> {
        if matches!(portal.state, PortalState::Ready) {
            if portal.statement.copy {
                let sql = portal.statement.prepared.sql.clone();
                let result = self.copy_in(&sql).await?;
                portal.state = PortalState::Done {
                    tag: "COPY 0".into(),
                };
                return Ok(result);
            }
            self.session.cancelled();
            let start = Instant::now();
            // The whole result is computed at the first Execute (under the statement's
            // snapshot) and handed out in row-limited chunks; see the report on cursors.
            let output = self
                .session
                .execute(&portal.statement.prepared, &portal.params, 0)
                .await;
            let elapsed = start.elapsed().as_secs_f64();
            match output {
                Err(e) => {
                    self.metrics.statement("extended", false, elapsed, None);
                    portal.state = PortalState::Done { tag: String::new() };
                    return Ok(Some(Err(e)));
                }
                Ok(QueryOutput::Rows { columns, rows, tag }) => {
                    self.metrics
                        .statement("extended", true, elapsed, Some(&tag));
                    portal.state = PortalState::Rows {
                        columns,
                        rows: rows.into(),
                        tag,
                        suspended: false,
                    };
                }
                Ok(QueryOutput::Command { tag }) => {
                    self.metrics
                        .statement("extended", true, elapsed, Some(&tag));
                    self.complete(tag.clone())?;
                    portal.state = PortalState::Done { tag };
                    return Ok(Some(Ok(())));
                }
                Ok(QueryOutput::Empty) => {
                    self.conn.send(PgWireBackendMessage::EmptyQueryResponse(
                        EmptyQueryResponse::new(),
                    ))?;
                    portal.state = PortalState::Done { tag: String::new() };
                    return Ok(Some(Ok(())));
                }
            }
        }
        match &mut portal.state {
            PortalState::Rows {
                columns,
                rows,
                tag,
                suspended,
            } => {
                let limit = if max_rows <= 0 {
                    rows.len()
                } else {
                    (max_rows as usize).min(rows.len())
                };
                let batch: Vec<Vec<Datum>> = rows.drain(..limit).collect();
                let formats = result_formats(&portal.result_formats, columns.len());
                let columns = columns.clone();
                if let Err(e) = self.send_rows(&columns, batch, &formats).await {
                    portal.state = PortalState::Done { tag: String::new() };
                    return Ok(Some(Err(e)));
                }
                if !rows.is_empty() {
                    *suspended = true;
                    self.conn
                        .send(PgWireBackendMessage::PortalSuspended(PortalSuspended::new()))?;
                    return Ok(Some(Ok(())));
                }
                // After a suspension PostgreSQL's tag counts the rows of this last Execute.
                let final_tag = if *suspended && tag.starts_with("SELECT") {
                    format!("SELECT {limit}")
                } else {
                    tag.clone()
                };
                self.complete(final_tag.clone())?;
                portal.state = PortalState::Done { tag: final_tag };
            }
            PortalState::Done { tag } => {
                // Re-running a finished portal yields nothing more.
                let tag = if tag.starts_with("SELECT") {
                    "SELECT 0".to_owned()
                } else {
                    tag.clone()
                };
                if !tag.is_empty() {
                    self.conn
                        .send(PgWireBackendMessage::CommandComplete(CommandComplete::new(
                            tag,
                        )))?;
                }
            }
            PortalState::Ready => {
                warn!("portal still ready after execution");
            }
        }
        Ok(Some(Ok(())))
    }
}
