//! Encode/decode throughput of keys, rows and records (`cargo bench -p shmdb-processing-node`).
//!
//! A plain timing loop rather than criterion, to keep the workspace's build small; it prints
//! nanoseconds per operation for a TPC-C-like customer row and its composite key.

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use shmdb_processing_node::{
    Datum, Decimal, Record, Version, decode_key, decode_row, encode_key, encode_row,
};

fn time(name: &str, iterations: u32, mut f: impl FnMut()) {
    for _ in 0..iterations / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    let per_op = start.elapsed().as_nanos() as f64 / f64::from(iterations);
    println!("{name:<24} {per_op:>8.1} ns/op");
}

fn main() {
    let key = vec![Datum::Int(7), Datum::Int(3), Datum::Int(2_451)];
    let row = vec![
        Datum::Int(2_451),
        Datum::Text("OE".into()),
        Datum::Text("BARBARBAR".into()),
        Datum::Text("Customer street address 1".into()),
        Datum::Text("Springfield".into()),
        Datum::Text("CA".into()),
        Datum::Text("123456789".into()),
        Datum::Timestamp(800_000_000_000_000),
        Datum::Text("GC".into()),
        Datum::Decimal(Decimal::new(5_000_000, 2)),
        Datum::Decimal(Decimal::new(1_234, 4)),
        Datum::Decimal(Decimal::new(-1_000, 2)),
        Datum::Decimal(Decimal::new(1_000, 2)),
        Datum::Int(1),
        Datum::Int(0),
        Datum::Text("x".repeat(300)),
    ];
    let n = 200_000;
    let key_bytes = encode_key(&key);
    let row_bytes = encode_row(&row);
    println!(
        "key {} bytes, row {} bytes",
        key_bytes.len(),
        row_bytes.len()
    );
    time("encode_key", n, || {
        black_box(encode_key(black_box(&key)));
    });
    time("decode_key", n, || {
        black_box(decode_key(black_box(&key_bytes)).ok());
    });
    time("encode_row", n, || {
        black_box(encode_row(black_box(&row)));
    });
    time("decode_row", n, || {
        black_box(decode_row(black_box(&row_bytes)).ok());
    });
    let mut record = Record::new();
    for tid in 1..=3 {
        record.push(Version::live(tid, row_bytes.clone())).ok();
    }
    let record_bytes = Bytes::from(record.encode());
    time("record write (gc+push)", n, || {
        let mut r = black_box(&record).clone();
        black_box(r.write(Version::live(10, row_bytes.clone()), 2).ok());
        black_box(r.encode());
    });
    time("record decode", n, || {
        black_box(Record::decode(black_box(&record_bytes)).ok());
    });
}
