//! Fuzzes startup-phase packets (StartupMessage, SSLRequest, CancelRequest) and the SCRAM
//! SASLInitialResponse body: errors are fine, panics are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shmdb_processing_node::pg::frontend::{decode_sasl_initial, decode_startup};

fuzz_target!(|data: &[u8]| {
    let _ = decode_startup(data);
    let _ = decode_sasl_initial(data);
});
