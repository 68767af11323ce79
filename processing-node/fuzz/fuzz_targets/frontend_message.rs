//! Fuzzes the decoding of frontend messages after startup: any bytes must give a message or
//! a ProtocolError, never a panic, and a decoded message must re-encode to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shmdb_processing_node::pg::frontend::{decode_message, encode_message};

fuzz_target!(|data: &[u8]| {
    let Some((&tag, body)) = data.split_first() else {
        return;
    };
    if let Ok(msg) = decode_message(tag, body) {
        let wire = encode_message(&msg);
        assert_eq!(wire[0], tag);
        assert_eq!(&wire[5..], body);
    }
});
