//! The five TPC-C transactions in the PostgreSQL form of the common TPC-C tools
//! (BenchBase): prepared statements with parameters, run unchanged, results checked.

mod common;
mod sql;

use std::sync::Arc;

use shmdb::cluster::ClusterOptions;
use shmdb_processing_node::Datum;
use shmdb_processing_node::sql::{QueryOutput, Session, SqlEngine};
use shmdb_processing_node::txn::EngineConfig;
use shmdb_store_client::framed::metrics::Direction;
use shmdb_store_client::{FramedConfig, FramedMetrics, FramedTransport, GrpcConfig};
use sql::*;

const SCHEMA: &str = "
CREATE TABLE warehouse (w_id int NOT NULL, w_ytd decimal(12,2) NOT NULL, w_tax decimal(4,4) NOT NULL, w_name varchar(10) NOT NULL,
  w_street_1 varchar(20) NOT NULL, w_street_2 varchar(20) NOT NULL, w_city varchar(20) NOT NULL, w_state char(2) NOT NULL, w_zip char(9) NOT NULL,
  PRIMARY KEY (w_id));
CREATE TABLE item (i_id int NOT NULL, i_name varchar(24) NOT NULL, i_price decimal(5,2) NOT NULL, i_data varchar(50) NOT NULL, i_im_id int NOT NULL,
  PRIMARY KEY (i_id));
CREATE TABLE stock (s_w_id int NOT NULL, s_i_id int NOT NULL, s_quantity int NOT NULL, s_ytd decimal(8,2) NOT NULL, s_order_cnt int NOT NULL,
  s_remote_cnt int NOT NULL, s_data varchar(50) NOT NULL, s_dist_01 char(24) NOT NULL, s_dist_02 char(24) NOT NULL,
  FOREIGN KEY (s_w_id) REFERENCES warehouse (w_id) ON DELETE CASCADE, FOREIGN KEY (s_i_id) REFERENCES item (i_id) ON DELETE CASCADE,
  PRIMARY KEY (s_w_id, s_i_id));
CREATE TABLE district (d_w_id int NOT NULL, d_id int NOT NULL, d_ytd decimal(12,2) NOT NULL, d_tax decimal(4,4) NOT NULL, d_next_o_id int NOT NULL,
  d_name varchar(10) NOT NULL, d_street_1 varchar(20) NOT NULL, d_street_2 varchar(20) NOT NULL, d_city varchar(20) NOT NULL, d_state char(2) NOT NULL,
  d_zip char(9) NOT NULL, FOREIGN KEY (d_w_id) REFERENCES warehouse (w_id) ON DELETE CASCADE, PRIMARY KEY (d_w_id, d_id));
CREATE TABLE customer (c_w_id int NOT NULL, c_d_id int NOT NULL, c_id int NOT NULL, c_discount decimal(4,4) NOT NULL, c_credit char(2) NOT NULL,
  c_last varchar(16) NOT NULL, c_first varchar(16) NOT NULL, c_credit_lim decimal(12,2) NOT NULL, c_balance decimal(12,2) NOT NULL,
  c_ytd_payment float NOT NULL, c_payment_cnt int NOT NULL, c_delivery_cnt int NOT NULL, c_street_1 varchar(20) NOT NULL,
  c_street_2 varchar(20) NOT NULL, c_city varchar(20) NOT NULL, c_state char(2) NOT NULL, c_zip char(9) NOT NULL, c_phone char(16) NOT NULL,
  c_since timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP, c_middle char(2) NOT NULL, c_data varchar(500) NOT NULL,
  FOREIGN KEY (c_w_id, c_d_id) REFERENCES district (d_w_id, d_id) ON DELETE CASCADE, PRIMARY KEY (c_w_id, c_d_id, c_id));
CREATE TABLE history (h_c_id int NOT NULL, h_c_d_id int NOT NULL, h_c_w_id int NOT NULL, h_d_id int NOT NULL, h_w_id int NOT NULL,
  h_date timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP, h_amount decimal(6,2) NOT NULL, h_data varchar(24) NOT NULL,
  FOREIGN KEY (h_c_w_id, h_c_d_id, h_c_id) REFERENCES customer (c_w_id, c_d_id, c_id) ON DELETE CASCADE);
CREATE TABLE oorder (o_w_id int NOT NULL, o_d_id int NOT NULL, o_id int NOT NULL, o_c_id int NOT NULL, o_carrier_id int DEFAULT NULL,
  o_ol_cnt int NOT NULL, o_all_local int NOT NULL, o_entry_d timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP,
  PRIMARY KEY (o_w_id, o_d_id, o_id), UNIQUE (o_w_id, o_d_id, o_c_id, o_id));
CREATE TABLE new_order (no_w_id int NOT NULL, no_d_id int NOT NULL, no_o_id int NOT NULL, PRIMARY KEY (no_w_id, no_d_id, no_o_id));
CREATE TABLE order_line (ol_w_id int NOT NULL, ol_d_id int NOT NULL, ol_o_id int NOT NULL, ol_number int NOT NULL, ol_i_id int NOT NULL,
  ol_delivery_d timestamp NULL DEFAULT NULL, ol_amount decimal(6,2) NOT NULL, ol_supply_w_id int NOT NULL, ol_quantity decimal(6,2) NOT NULL,
  ol_dist_info char(24) NOT NULL, PRIMARY KEY (ol_w_id, ol_d_id, ol_o_id, ol_number));
CREATE INDEX idx_customer_name ON customer (c_w_id, c_d_id, c_last, c_first);
";

fn i(v: i64) -> Datum {
    Datum::Int(v)
}

fn dec(s: &str) -> Datum {
    Datum::Decimal(s.parse().unwrap_or_default())
}

fn t(s: &str) -> Datum {
    Datum::Text(s.to_string())
}

async fn q(s: &mut Session, sql: &str, params: &[Datum]) -> anyhow::Result<QueryOutput> {
    prep(s, sql, params).await
}

fn count_tag(out: &QueryOutput) -> String {
    match out {
        QueryOutput::Command { tag } | QueryOutput::Rows { tag, .. } => tag.clone(),
        QueryOutput::Empty => String::new(),
    }
}

async fn load(s: &mut Session) -> anyhow::Result<()> {
    exec(s, SCHEMA).await?;
    exec(s, "INSERT INTO warehouse VALUES (1, 300000.00, 0.1000, 'w1', 's1', 's2', 'city', 'ST', '123456789')").await?;
    let mut items = Vec::new();
    let mut stock = Vec::new();
    for n in 1..=20 {
        items.push(format!("({n}, 'item{n}', {}.50, 'data', {n})", n));
        stock.push(format!("(1, {n}, {}, 0, 0, 0, 'sdata', 'dist01-xxxxxxxxxxxxxxxxx', 'dist02-xxxxxxxxxxxxxxxxx')", 10 + n));
    }
    exec(s, &format!("INSERT INTO item VALUES {}", items.join(", "))).await?;
    exec(s, &format!("INSERT INTO stock VALUES {}", stock.join(", "))).await?;
    for d in 1..=2 {
        exec(s, &format!("INSERT INTO district VALUES (1, {d}, 30000.00, 0.0500, 4, 'd{d}', 'a', 'b', 'c', 'ST', '123456789')")).await?;
        for c in 1..=5 {
            let last = if c % 2 == 0 { "BARBAR" } else { "OUGHTABLE" };
            exec(
                s,
                &format!(
                    "INSERT INTO customer (c_w_id, c_d_id, c_id, c_discount, c_credit, c_last, c_first, c_credit_lim, c_balance, \
                     c_ytd_payment, c_payment_cnt, c_delivery_cnt, c_street_1, c_street_2, c_city, c_state, c_zip, c_phone, c_middle, c_data) \
                     VALUES (1, {d}, {c}, 0.1000, '{}', '{last}', 'first{c}', 50000.00, -10.00, 10.0, 1, 0, 's1', 's2', 'c', 'ST', '123456789', '0123456789012345', 'OE', 'cdata')",
                    if c == 1 { "BC" } else { "GC" }
                ),
            )
            .await?;
        }
        // Orders 1..3, the last two undelivered.
        for o in 1..=3 {
            exec(s, &format!("INSERT INTO oorder (o_w_id, o_d_id, o_id, o_c_id, o_carrier_id, o_ol_cnt, o_all_local) VALUES (1, {d}, {o}, {o}, {}, 2, 1)", if o == 1 { "5" } else { "NULL" })).await?;
            for l in 1..=2 {
                exec(s, &format!("INSERT INTO order_line VALUES (1, {d}, {o}, {l}, {}, NULL, 10.00, 1, 5, 'dist-info-xxxxxxxxxxxxxx')", o + l)).await?;
            }
            if o > 1 {
                exec(s, &format!("INSERT INTO new_order VALUES (1, {d}, {o})")).await?;
            }
        }
    }
    Ok(())
}

async fn new_order(s: &mut Session, d: i64, c: i64, items: &[(i64, i64)]) -> anyhow::Result<i64> {
    exec(s, "BEGIN").await?;
    let out = q(s, "SELECT C_DISCOUNT, C_LAST, C_CREDIT FROM customer WHERE C_W_ID = $1 AND C_D_ID = $2 AND C_ID = $3", &[i(1), i(d), i(c)]).await?;
    assert_eq!(text_rows(&out).len(), 1);
    let out = q(s, "SELECT W_TAX FROM warehouse WHERE W_ID = $1", &[i(1)]).await?;
    assert_eq!(text_rows(&out), vec!["0.1000"]);
    let out = q(
        s,
        "SELECT D_NEXT_O_ID, D_TAX FROM district WHERE D_W_ID = $1 AND D_ID = $2 FOR UPDATE",
        &[i(1), i(d)],
    )
    .await?;
    let next: i64 = text_rows(&out)[0]
        .split('|')
        .next()
        .unwrap_or("0")
        .parse()?;
    let out = q(
        s,
        "UPDATE district SET D_NEXT_O_ID = D_NEXT_O_ID + 1 WHERE D_W_ID = $1 AND D_ID = $2",
        &[i(1), i(d)],
    )
    .await?;
    assert_eq!(count_tag(&out), "UPDATE 1");
    q(
        s,
        "INSERT INTO oorder (O_ID, O_D_ID, O_W_ID, O_C_ID, O_ENTRY_D, O_OL_CNT, O_ALL_LOCAL) VALUES (?, ?, ?, ?, ?, ?, ?)".replace('?', "$").as_str().split('$').enumerate().map(|(n, p)| if n == 0 { p.to_string() } else { format!("${n}{p}") }).collect::<String>().as_str(),
        &[i(next), i(d), i(1), i(c), Datum::Timestamp(700_000_000_000_000), i(items.len() as i64), i(1)],
    )
    .await?;
    q(
        s,
        "INSERT INTO new_order (NO_O_ID, NO_D_ID, NO_W_ID) VALUES ( $1, $2, $3)",
        &[i(next), i(d), i(1)],
    )
    .await?;
    let mut values = Vec::new();
    let mut params = Vec::new();
    for (n, (item, qty)) in items.iter().enumerate() {
        let out = q(
            s,
            "SELECT I_PRICE, I_NAME , I_DATA FROM item WHERE I_ID = $1",
            &[i(*item)],
        )
        .await?;
        let price: f64 = text_rows(&out)[0]
            .split('|')
            .next()
            .unwrap_or("0")
            .parse()?;
        let out = q(s, "SELECT S_QUANTITY, S_DATA, S_DIST_01, S_DIST_02 FROM stock WHERE S_I_ID = $1 AND S_W_ID = $2 FOR UPDATE", &[i(*item), i(1)]).await?;
        let sq: i64 = text_rows(&out)[0]
            .split('|')
            .next()
            .unwrap_or("0")
            .parse()?;
        let new_q = if sq - qty >= 10 {
            sq - qty
        } else {
            sq - qty + 91
        };
        let out = q(
            s,
            "UPDATE stock SET S_QUANTITY = $1 , S_YTD = S_YTD + $2, S_ORDER_CNT = S_ORDER_CNT + 1, S_REMOTE_CNT = S_REMOTE_CNT + $3 WHERE S_I_ID = $4 AND S_W_ID = $5",
            &[i(new_q), i(*qty), i(0), i(*item), i(1)],
        )
        .await?;
        assert_eq!(count_tag(&out), "UPDATE 1");
        let base = params.len();
        values.push(format!(
            "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
            base + 1,
            base + 2,
            base + 3,
            base + 4,
            base + 5,
            base + 6,
            base + 7,
            base + 8,
            base + 9
        ));
        params.extend([
            i(next),
            i(d),
            i(1),
            i(n as i64 + 1),
            i(*item),
            i(1),
            i(*qty),
            dec(&format!("{:.2}", price * *qty as f64)),
            t("dist-info-xxxxxxxxxxxxxx"),
        ]);
    }
    // The batched multi-row insert of the order lines.
    let out = q(
        s,
        &format!("INSERT INTO order_line (OL_O_ID, OL_D_ID, OL_W_ID, OL_NUMBER, OL_I_ID, OL_SUPPLY_W_ID, OL_QUANTITY, OL_AMOUNT, OL_DIST_INFO) VALUES {}", values.join(", ")),
        &params,
    )
    .await?;
    assert_eq!(count_tag(&out), format!("INSERT 0 {}", items.len()));
    exec(s, "COMMIT").await?;
    Ok(next)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpcc_transactions() -> anyhow::Result<()> {
    let (_cluster, engines) = start(2).await?;
    let mut s = engines[0].session();
    let mut other = engines[1].session();
    load(&mut s).await?;

    // New-Order (on both processing nodes).
    let o = new_order(&mut s, 1, 2, &[(3, 5), (7, 2)]).await?;
    assert_eq!(o, 4);
    let o = new_order(&mut other, 1, 3, &[(3, 1)]).await?;
    assert_eq!(o, 5);
    assert_eq!(
        rows(
            &mut s,
            "SELECT d_next_o_id FROM district WHERE d_w_id = 1 AND d_id = 1"
        )
        .await?,
        vec!["6"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT s_quantity, s_order_cnt FROM stock WHERE s_w_id = 1 AND s_i_id = 3"
        )
        .await?,
        vec!["98|2"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT count(*) FROM order_line WHERE ol_w_id = 1 AND ol_d_id = 1 AND ol_o_id = 4"
        )
        .await?,
        vec!["2"]
    );

    // Payment, by customer last name.
    exec(&mut s, "BEGIN").await?;
    let out = q(
        &mut s,
        "UPDATE warehouse SET W_YTD = W_YTD + $1 WHERE W_ID = $2",
        &[dec("100.50"), i(1)],
    )
    .await?;
    assert_eq!(count_tag(&out), "UPDATE 1");
    let out = q(&mut s, "SELECT W_STREET_1, W_STREET_2, W_CITY, W_STATE, W_ZIP, W_NAME FROM warehouse WHERE W_ID = $1", &[i(1)]).await?;
    assert_eq!(text_rows(&out), vec!["s1|s2|city|ST|123456789|w1"]);
    q(
        &mut s,
        "UPDATE district SET D_YTD = D_YTD + $1 WHERE D_W_ID = $2 AND D_ID = $3",
        &[dec("100.50"), i(1), i(1)],
    )
    .await?;
    q(&mut s, "SELECT D_STREET_1, D_STREET_2, D_CITY, D_STATE, D_ZIP, D_NAME FROM district WHERE D_W_ID = $1 AND D_ID = $2", &[i(1), i(1)]).await?;
    let out = q(
        &mut s,
        "SELECT C_FIRST, C_MIDDLE, C_ID, C_STREET_1, C_STREET_2, C_CITY, C_STATE, C_ZIP, C_PHONE, C_CREDIT, C_CREDIT_LIM, C_DISCOUNT, C_BALANCE, C_YTD_PAYMENT, C_PAYMENT_CNT, C_SINCE FROM customer WHERE C_W_ID = $1 AND C_D_ID = $2 AND C_LAST = $3 ORDER BY C_FIRST",
        &[i(1), i(1), t("OUGHTABLE")],
    )
    .await?;
    let found = text_rows(&out);
    assert_eq!(found.len(), 3);
    assert!(found[0].starts_with("first1|OE|1|"), "{found:?}");
    let c_id = 3;
    let out = q(
        &mut s,
        "SELECT C_DATA FROM customer WHERE C_W_ID = $1 AND C_D_ID = $2 AND C_ID = $3",
        &[i(1), i(1), i(c_id)],
    )
    .await?;
    assert_eq!(text_rows(&out), vec!["cdata"]);
    let out = q(
        &mut s,
        "UPDATE customer SET C_BALANCE = $1, C_YTD_PAYMENT = $2, C_PAYMENT_CNT = $3 WHERE C_W_ID = $4 AND C_D_ID = $5 AND C_ID = $6",
        &[dec("-110.50"), Datum::Float(110.5), i(2), i(1), i(1), i(c_id)],
    )
    .await?;
    assert_eq!(count_tag(&out), "UPDATE 1");
    q(
        &mut s,
        "INSERT INTO history (H_C_D_ID, H_C_W_ID, H_C_ID, H_D_ID, H_W_ID, H_DATE, H_AMOUNT, H_DATA) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
        &[i(1), i(1), i(c_id), i(1), i(1), Datum::Timestamp(0), dec("100.50"), t("w1    d1")],
    )
    .await?;
    exec(&mut s, "COMMIT").await?;
    assert_eq!(
        rows(&mut other, "SELECT w_ytd FROM warehouse").await?,
        vec!["300100.50"]
    );
    assert_eq!(
        rows(&mut other, "SELECT count(*), sum(h_amount) FROM history").await?,
        vec!["1|100.50"]
    );

    // Order-Status.
    exec(&mut s, "BEGIN").await?;
    let out = q(&mut s, "SELECT O_ID, O_CARRIER_ID, O_ENTRY_D FROM oorder WHERE O_W_ID = $1 AND O_D_ID = $2 AND O_C_ID = $3 ORDER BY O_ID DESC LIMIT 1", &[i(1), i(1), i(2)]).await?;
    assert!(
        text_rows(&out)[0].starts_with("4|NULL|"),
        "{:?}",
        text_rows(&out)
    );
    let out = q(&mut s, "SELECT OL_I_ID, OL_SUPPLY_W_ID, OL_QUANTITY, OL_AMOUNT, OL_DELIVERY_D FROM order_line WHERE OL_O_ID = $1 AND OL_D_ID = $2 AND OL_W_ID = $3", &[i(4), i(1), i(1)]).await?;
    assert_eq!(
        text_rows(&out),
        vec!["3|1|5.00|17.50|NULL", "7|1|2.00|15.00|NULL"]
    );
    exec(&mut s, "COMMIT").await?;

    // Delivery: the oldest new order per district; the DELETE's row count decides.
    exec(&mut s, "BEGIN").await?;
    let mut delivered = Vec::new();
    for d in 1..=2 {
        let out = q(&mut s, "SELECT NO_O_ID FROM new_order WHERE NO_D_ID = $1 AND NO_W_ID = $2 ORDER BY NO_O_ID ASC LIMIT 1", &[i(d), i(1)]).await?;
        let no: i64 = text_rows(&out)[0].parse()?;
        let out = q(
            &mut s,
            "DELETE FROM new_order WHERE NO_O_ID = $1 AND NO_D_ID = $2 AND NO_W_ID = $3",
            &[i(no), i(d), i(1)],
        )
        .await?;
        assert_eq!(count_tag(&out), "DELETE 1");
        let out = q(
            &mut s,
            "DELETE FROM new_order WHERE NO_O_ID = $1 AND NO_D_ID = $2 AND NO_W_ID = $3",
            &[i(no), i(d), i(1)],
        )
        .await?;
        assert_eq!(count_tag(&out), "DELETE 0");
        let out = q(
            &mut s,
            "SELECT O_C_ID FROM oorder WHERE O_ID = $1 AND O_D_ID = $2 AND O_W_ID = $3",
            &[i(no), i(d), i(1)],
        )
        .await?;
        let c: i64 = text_rows(&out)[0].parse()?;
        q(
            &mut s,
            "UPDATE oorder SET O_CARRIER_ID = $1 WHERE O_ID = $2 AND O_D_ID = $3 AND O_W_ID = $4",
            &[i(7), i(no), i(d), i(1)],
        )
        .await?;
        let out = q(&mut s, "UPDATE order_line SET OL_DELIVERY_D = $1 WHERE OL_O_ID = $2 AND OL_D_ID = $3 AND OL_W_ID = $4", &[Datum::Timestamp(1), i(no), i(d), i(1)]).await?;
        assert_eq!(count_tag(&out), "UPDATE 2");
        let out = q(&mut s, "SELECT SUM(OL_AMOUNT) AS OL_TOTAL FROM order_line WHERE OL_O_ID = $1 AND OL_D_ID = $2 AND OL_W_ID = $3", &[i(no), i(d), i(1)]).await?;
        let total = text_rows(&out)[0].clone();
        assert_eq!(total, "20.00");
        let out = q(
            &mut s,
            "UPDATE customer SET C_BALANCE = C_BALANCE + $1, C_DELIVERY_CNT = C_DELIVERY_CNT + 1 WHERE C_W_ID = $2 AND C_D_ID = $3 AND C_ID = $4",
            &[dec(&total), i(1), i(d), i(c)],
        )
        .await?;
        assert_eq!(count_tag(&out), "UPDATE 1");
        delivered.push((d, no, c));
    }
    exec(&mut s, "COMMIT").await?;
    assert_eq!(delivered, vec![(1, 2, 2), (2, 2, 2)]);
    assert_eq!(rows(&mut other, "SELECT c_balance, c_delivery_cnt FROM customer WHERE c_w_id = 1 AND c_d_id = 1 AND c_id = 2").await?, vec!["10.00|1"]);

    // Stock-Level: COUNT(DISTINCT) over a comma join with range predicates.
    exec(&mut s, "BEGIN").await?;
    let out = q(
        &mut s,
        "SELECT D_NEXT_O_ID FROM district WHERE D_W_ID = $1 AND D_ID = $2",
        &[i(1), i(1)],
    )
    .await?;
    let next: i64 = text_rows(&out)[0].parse()?;
    let sql = "SELECT COUNT(DISTINCT (S_I_ID)) AS STOCK_COUNT FROM order_line, stock WHERE OL_W_ID = $1 AND OL_D_ID = $2 AND OL_O_ID < $3 AND OL_O_ID >= $4 AND S_W_ID = $5 AND S_I_ID = OL_I_ID AND S_QUANTITY < $6";
    let out = q(
        &mut s,
        sql,
        &[i(1), i(1), i(next), i(next - 20), i(1), i(15)],
    )
    .await?;
    // Items of district 1's orders: 2,3 (o1), 3,4 (o2), 4,5 (o3), 3,7 (o4), 3 (o5); stock
    // quantities 12, 98, 14, 15, 15: two are below 15.
    assert_eq!(text_rows(&out), vec!["2"]);
    let plan = rows(
        &mut s,
        &format!(
            "EXPLAIN {}",
            sql.replace("$1", "1")
                .replace("$2", "1")
                .replace("$3", "6")
                .replace("$4", "1")
                .replace("$5", "1")
                .replace("$6", "15")
        ),
    )
    .await?;
    assert!(
        plan.iter()
            .any(|l| l.contains("primary-key lookup of stock")),
        "{plan:?}"
    );
    exec(&mut s, "COMMIT").await?;
    Ok(())
}

/// Requests a store client had answered: framed answers (counted as they are read, before
/// the caller gets them; sent frames are counted by the writer task after the write, which
/// may trail the answer), plus requests sent over gRPC while a node's framed endpoint was not
/// known yet.
fn requests_answered(metrics: &FramedMetrics) -> u64 {
    metrics.frames(Direction::Received) + metrics.grpc_fallbacks.get()
}

/// NewOrder's first statement joins a customer and a warehouse, both by keys its parameters
/// fix: the two rows (and the catalog version a transaction's first statement confirms) come
/// in one store request, not one after the other. Counted on the processing node's own store
/// client: the commit manager writes to the same storage nodes in the background.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_of_fixed_key_lookups_is_one_store_request() -> anyhow::Result<()> {
    // No placement rounds after the start: a map change in the middle of the statement would
    // resend its batch (correctly, but counted twice).
    let cluster = common::Cluster::start_with(ClusterOptions {
        placement_interval_ms: 3_600_000,
        ..ClusterOptions::ephemeral(1, 1)
    })
    .await?;
    let metrics = FramedMetrics::new()?;
    let transport = Arc::new(FramedTransport::new(
        FramedConfig::default(),
        GrpcConfig::default(),
        metrics.clone(),
    ));
    let engine = cluster
        .engine_through(EngineConfig::new(1), transport)
        .await?;
    let mut s = SqlEngine::new(engine).session();
    load(&mut s).await?;
    let join = "SELECT c_discount, c_last, c_credit, w_tax FROM customer, warehouse \
                WHERE w_id = $1 AND c_w_id = w_id AND c_d_id = $2 AND c_id = $3";
    for (c, found) in [(2, true), (99, false)] {
        exec(&mut s, "BEGIN").await?;
        let before = requests_answered(&metrics);
        let out = q(&mut s, join, &[i(1), i(1), i(c)]).await?;
        let requests = requests_answered(&metrics) - before;
        exec(&mut s, "COMMIT").await?;
        assert_eq!(requests, 1, "customer {c}");
        assert_eq!(text_rows(&out).len(), usize::from(found), "customer {c}");
    }
    let out = q(&mut s, join, &[i(1), i(1), i(2)]).await?;
    assert_eq!(text_rows(&out)[0].split('|').next_back(), Some("0.1000"));
    Ok(())
}
