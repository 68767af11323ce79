//! Tests of the key encoding: byte order equals SQL order, and keys decode from bytes alone.

use std::cmp::Ordering;

use proptest::prelude::*;
use rust_decimal::Decimal;

use super::*;

fn text(s: &str) -> Datum {
    Datum::Text(s.to_owned())
}

fn dec(mantissa: i64, scale: u32) -> Datum {
    Datum::Decimal(Decimal::new(mantissa, scale))
}

fn key(datums: &[Datum]) -> Vec<u8> {
    encode_key(datums)
}

fn ordered(datums: &[Datum], orders: &[SortOrder]) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_key_ordered(&mut buf, datums, orders);
    buf
}

/// Asserts that the listed keys are strictly increasing both as bytes and as tuples.
fn assert_increasing(tuples: &[Vec<Datum>], orders: &[SortOrder]) {
    for pair in tuples.windows(2) {
        assert_eq!(
            compare_keys(&pair[0], &pair[1], orders),
            Ordering::Less,
            "{:?} < {:?} as tuples",
            pair[0],
            pair[1]
        );
        assert!(
            ordered(&pair[0], orders) < ordered(&pair[1], orders),
            "{:?} < {:?} as bytes",
            pair[0],
            pair[1]
        );
    }
}

#[test]
fn string_prefixes_order_first() {
    assert_increasing(
        &[
            vec![text("")],
            vec![text("\0")],
            vec![text("a")],
            vec![text("ab")],
            vec![text("ab\0")],
            vec![text("ab\0\0")],
            vec![text("ab\u{1}")],
            vec![text("abc")],
            vec![text("abd")],
            vec![text("b")],
        ],
        &[],
    );
}

#[test]
fn composite_orders_by_first_column_first() {
    assert_increasing(
        &[
            vec![text("ab")],
            vec![text("ab"), Datum::Int(5)],
            vec![text("ab"), Datum::Int(6)],
            vec![text("abc"), Datum::Int(1)],
            vec![text("abc"), Datum::Null],
        ],
        &[],
    );
    assert_increasing(
        &[
            vec![Datum::Bytes(vec![0xff]), Datum::Int(-1)],
            vec![Datum::Bytes(vec![0xff, 0x00]), Datum::Int(-9)],
            vec![Datum::Bytes(vec![0xff, 0xff]), Datum::Int(i64::MIN)],
        ],
        &[],
    );
}

#[test]
fn integers_order_across_widths() {
    let values = [
        i64::MIN,
        i64::MIN + 1,
        -(1 << 40),
        -65_536,
        -65_535,
        -256,
        -255,
        -1,
        0,
        1,
        255,
        256,
        65_535,
        1 << 40,
        i64::MAX - 1,
        i64::MAX,
    ];
    let tuples: Vec<_> = values.iter().map(|&v| vec![Datum::Int(v)]).collect();
    assert_increasing(&tuples, &[]);
    assert_increasing(
        &tuples.iter().rev().cloned().collect::<Vec<_>>(),
        &[SortOrder::DESC],
    );
    assert_eq!(key(&[Datum::Int(0)]).len(), 1);
    assert_eq!(key(&[Datum::Int(200)]).len(), 2);
    assert_eq!(key(&[Datum::Int(-200)]).len(), 2);
}

#[test]
fn floats_follow_postgres_order() {
    let tuples: Vec<_> = [
        f64::NEG_INFINITY,
        f64::MIN,
        -1.5,
        -f64::MIN_POSITIVE,
        -0.0,
        f64::MIN_POSITIVE,
        1.0,
        f64::MAX,
        f64::INFINITY,
        f64::NAN,
    ]
    .iter()
    .map(|&f| vec![Datum::Float(f)])
    .collect();
    // -0.0 and 0.0 are one value: listed once above, here checked equal.
    assert_increasing(&tuples, &[]);
    assert_eq!(key(&[Datum::Float(-0.0)]), key(&[Datum::Float(0.0)]));
    assert_eq!(
        key(&[Datum::Float(f64::NAN)]),
        key(&[Datum::Float(-f64::NAN)])
    );
    let odd_nan = f64::from_bits(0x7ff0_0000_0000_0001);
    assert_eq!(
        key(&[Datum::Float(odd_nan)]),
        key(&[Datum::Float(f64::NAN)])
    );
}

#[test]
fn decimals_order_by_value_and_normalise() {
    assert_increasing(
        &[
            vec![Datum::Decimal(Decimal::MIN)],
            vec![dec(-1000, 0)],
            vec![dec(-105, 2)],
            vec![dec(-1, 0)],
            vec![dec(-1, 1)],
            vec![dec(-1, 28)],
            vec![dec(0, 5)],
            vec![dec(1, 28)],
            vec![dec(1, 1)],
            vec![dec(1, 0)],
            vec![dec(1001, 3)],
            vec![dec(101, 2)],
            vec![dec(11, 1)],
            vec![dec(10, 0)],
            vec![dec(100, 0)],
            vec![Datum::Decimal(Decimal::MAX)],
        ],
        &[],
    );
    assert_eq!(key(&[dec(150, 2)]), key(&[dec(15, 1)]));
    assert_eq!(key(&[dec(100, 0)]), key(&[dec(1_000_000, 4)]));
    assert_eq!(key(&[dec(0, 3)]), key(&[dec(0, 0)]));
    let mut negative_zero = Decimal::ZERO;
    negative_zero.set_sign_negative(true);
    assert_eq!(key(&[Datum::Decimal(negative_zero)]), key(&[dec(0, 0)]));
}

#[test]
fn nulls_follow_postgres_defaults() {
    // ASC: NULLS LAST.
    assert!(key(&[Datum::Int(i64::MAX)]) < key(&[Datum::Null]));
    assert!(key(&[Datum::Bytes(vec![0xff; 9])]) < key(&[Datum::Null]));
    // DESC: NULLS FIRST.
    let desc = [SortOrder::DESC];
    assert!(ordered(&[Datum::Null], &desc) < ordered(&[Datum::Int(i64::MAX)], &desc));
    // The non-default placements.
    let asc_first = [SortOrder {
        descending: false,
        nulls_first: true,
    }];
    assert!(ordered(&[Datum::Null], &asc_first) < ordered(&[Datum::Int(i64::MIN)], &asc_first));
    let desc_last = [SortOrder {
        descending: true,
        nulls_first: false,
    }];
    assert!(ordered(&[Datum::Int(i64::MIN)], &desc_last) < ordered(&[Datum::Null], &desc_last));
}

#[test]
fn descending_text_as_last_column_keeps_prefixes_right() {
    let desc = [SortOrder::DESC];
    assert_increasing(
        &[
            vec![text("abd")],
            vec![text("abc")],
            vec![text("ab\0")],
            vec![text("ab")],
            vec![text("a")],
            vec![text("")],
        ],
        &desc,
    );
}

#[test]
fn decodes_from_bytes_alone() {
    let tuple = vec![
        Datum::Null,
        Datum::Bool(true),
        Datum::Int(-42),
        dec(-31_415, 4),
        Datum::Float(2.5),
        text("héllo\0wörld"),
        Datum::Bytes(vec![0, 0xff, 0]),
        Datum::Date(-1),
        Datum::Timestamp(i64::MAX),
    ];
    let orders = [
        SortOrder::ASC,
        SortOrder::DESC,
        SortOrder::DESC,
        SortOrder::ASC,
    ];
    for orders in [&[][..], &orders[..]] {
        let bytes = ordered(&tuple, orders);
        assert_eq!(decode_key(&bytes).expect("decodes"), tuple);
    }
    let (first, len) = decode_column(&key(&tuple)).expect("decodes");
    assert_eq!((first, len), (Datum::Null, 1));
}

#[test]
fn decode_rejects_damage() {
    assert!(matches!(
        decode_key(&[0x00]),
        Err(DecodeError::UnknownTag { tag: 0, .. })
    ));
    assert!(decode_key(&[TAG_TEXT, b'a']).is_err());
    assert!(decode_key(&[TAG_TEXT, 0, 7]).is_err());
    assert!(decode_key(&[TAG_TEXT, 0xc3, 0, STRING_END]).is_err());
    // 1 written in two bytes is not canonical.
    assert!(decode_key(&[TAG_INT_ZERO + 2, 0, 1]).is_err());
    // Positive integer above i64::MAX.
    assert!(decode_key(&[TAG_INT_ZERO + 8, 0x80, 0, 0, 0, 0, 0, 0, 0]).is_err());
    // A decimal with 10^40: beyond the 96-bit mantissa.
    assert!(decode_key(&[TAG_DECIMAL_POS, 0x80, 41, 2]).is_err());
    // A decimal with a leading zero digit.
    assert!(decode_key(&[TAG_DECIMAL_POS, 0x80, 1, 2 * 5]).is_err());
}

#[test]
fn prefix_successor_bounds_prefix_scans() {
    assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
    assert_eq!(prefix_successor(&[1, 0xff, 0xff]), Some(vec![2]));
    assert_eq!(prefix_successor(&[0xff, 0xff]), None);
    assert_eq!(prefix_successor(&[]), None);
    let prefix = key(&[text("ab")]);
    let end = prefix_successor(&prefix).expect("has a successor");
    for inside in [
        vec![text("ab")],
        vec![text("ab"), Datum::Null],
        vec![text("ab"), Datum::Int(i64::MAX)],
    ] {
        let k = key(&inside);
        assert!(k >= prefix && k < end, "{inside:?} inside");
    }
    for outside in [vec![text("ab\0")], vec![text("abc")], vec![text("b")]] {
        assert!(key(&outside) >= end, "{outside:?} outside");
    }
}

// ---- property tests --------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Type {
    Bool,
    Int,
    Float,
    Decimal,
    Text,
    Bytes,
    Date,
    Timestamp,
}

fn any_type() -> impl Strategy<Value = Type> {
    prop_oneof![
        Just(Type::Bool),
        Just(Type::Int),
        Just(Type::Float),
        Just(Type::Decimal),
        Just(Type::Text),
        Just(Type::Bytes),
        Just(Type::Date),
        Just(Type::Timestamp),
    ]
}

fn any_order() -> impl Strategy<Value = SortOrder> {
    (any::<bool>(), any::<bool>()).prop_map(|(descending, nulls_first)| SortOrder {
        descending,
        nulls_first,
    })
}

/// Small alphabets make equal values and shared prefixes common.
fn any_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![Just('\0'), Just('a'), Just('b'), Just('é'), any::<char>()],
        0..6,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

fn any_bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![Just(0u8), Just(1u8), Just(0xfe), Just(0xff), any::<u8>()],
        0..6,
    )
}

fn any_int() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(i64::MIN),
        Just(i64::MAX),
        Just(0),
        -300i64..300,
        any::<i64>(),
    ]
}

fn any_float() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(-0.0),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(f64::NAN),
        Just(-f64::NAN),
        Just(f64::MIN_POSITIVE),
        Just(-f64::MIN_POSITIVE),
        -3.0f64..3.0,
        any::<f64>(),
    ]
}

/// Decimals across the whole range, and small values rescaled so that equal values with
/// different scales (`1.5`, `1.50`) meet often.
fn any_decimal() -> impl Strategy<Value = Decimal> {
    let full = (0u128..(1u128 << 96), any::<bool>(), 0u32..=28).prop_map(|(m, neg, scale)| {
        let m = m as i128;
        Decimal::from_i128_with_scale(if neg { -m } else { m }, scale)
    });
    let small = (-2000i64..2000, 0u32..4, 0u32..6).prop_map(|(m, scale, extra)| {
        let widened = i128::from(m) * 10i128.pow(extra);
        Decimal::from_i128_with_scale(widened, scale + extra)
    });
    prop_oneof![small, full, Just(Decimal::MAX), Just(Decimal::MIN)]
}

fn value_of(ty: Type) -> BoxedStrategy<Datum> {
    let value = match ty {
        Type::Bool => any::<bool>().prop_map(Datum::Bool).boxed(),
        Type::Int => any_int().prop_map(Datum::Int).boxed(),
        Type::Float => any_float().prop_map(Datum::Float).boxed(),
        Type::Decimal => any_decimal().prop_map(Datum::Decimal).boxed(),
        Type::Text => any_text().prop_map(Datum::Text).boxed(),
        Type::Bytes => any_bytes().prop_map(Datum::Bytes).boxed(),
        Type::Date => prop_oneof![Just(i32::MIN), Just(i32::MAX), -5i32..5, any::<i32>()]
            .prop_map(Datum::Date)
            .boxed(),
        Type::Timestamp => any_int().prop_map(Datum::Timestamp).boxed(),
    };
    prop_oneof![1 => Just(Datum::Null), 5 => value].boxed()
}

fn tuple_of(types: &[Type]) -> BoxedStrategy<Vec<Datum>> {
    types
        .iter()
        .map(|&ty| value_of(ty))
        .collect::<Vec<_>>()
        .boxed()
}

/// A schema (column types and orders) and two tuples of it.
fn schema_and_pair() -> impl Strategy<Value = (Vec<SortOrder>, Vec<Datum>, Vec<Datum>)> {
    proptest::collection::vec((any_type(), any_order()), 1..5).prop_flat_map(|columns| {
        let types: Vec<Type> = columns.iter().map(|c| c.0).collect();
        let orders: Vec<SortOrder> = columns.iter().map(|c| c.1).collect();
        (Just(orders), tuple_of(&types), tuple_of(&types))
    })
}

fn check_decode(orders: &[SortOrder], tuple: &[Datum]) -> Result<(), TestCaseError> {
    let bytes = ordered(tuple, orders);
    let back = decode_key(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(back.len(), tuple.len());
    for (a, b) in tuple.iter().zip(&back) {
        // Equal by value (decimals, -0.0, NaN), same type, and for other floats same bits.
        prop_assert_eq!(a.kind(), b.kind());
        prop_assert_eq!(a, b);
        if let (Datum::Float(x), Datum::Float(y)) = (a, b)
            && !x.is_nan()
            && *x != 0.0
        {
            prop_assert_eq!(x.to_bits(), y.to_bits());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn byte_order_is_sql_order((orders, a, b) in schema_and_pair()) {
        let expected = compare_keys(&a, &b, &orders);
        prop_assert_eq!(ordered(&a, &orders).cmp(&ordered(&b, &orders)), expected);
        check_decode(&orders, &a)?;
        check_decode(&orders, &b)?;
    }

    #[test]
    fn shorter_tuples_order_as_prefixes((orders, a, b) in schema_and_pair(), cut in 0usize..5) {
        let b = &b[..cut.min(b.len())];
        prop_assert_eq!(
            ordered(&a, &orders).cmp(&ordered(b, &orders)),
            compare_keys(&a, b, &orders)
        );
    }

    #[test]
    fn mixed_types_still_order_totally(
        a in proptest::collection::vec(any_type().prop_flat_map(value_of), 1..4),
        b in proptest::collection::vec(any_type().prop_flat_map(value_of), 1..4),
        orders in proptest::collection::vec(any_order(), 0..4),
    ) {
        prop_assert_eq!(
            ordered(&a, &orders).cmp(&ordered(&b, &orders)),
            compare_keys(&a, &b, &orders)
        );
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..48)) {
        let _ = decode_key(&bytes);
    }

    #[test]
    fn every_column_is_self_delimiting((orders, a, _b) in schema_and_pair()) {
        let bytes = ordered(&a, &orders);
        let mut rest = &bytes[..];
        for expected in &a {
            let (datum, len) = decode_column(rest).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&datum, expected);
            rest = &rest[len..];
        }
        prop_assert!(rest.is_empty());
    }
}
