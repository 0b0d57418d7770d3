//! `cargo fuzz run nbd_parsers`: the option and request parsers on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lightnvm_nbd::proto;

fuzz_target!(|data: &[u8]| {
    let _ = proto::parse_info_request(data);
    if data.len() >= 16 {
        let _ = proto::parse_option_header(data[..16].try_into().unwrap());
    }
    if data.len() >= 28 {
        let _ = proto::parse_request(data[..28].try_into().unwrap());
    }
});
