//! `cargo fuzz run meta_oob`: the per-sector OOB decoder on arbitrary bytes (the first 16 are
//! the OOB, the rest the sector's data). It must not panic; whatever decodes re-encodes to the
//! same 16 bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lightnvm_ftl::meta::oob;

fuzz_target!(|input: &[u8]| {
    let split = input.len().min(oob::BYTES);
    let (bytes, data) = input.split_at(split);
    if let Ok(v) = oob::decode(bytes, data) {
        let mut again = [0u8; oob::BYTES];
        oob::encode(&mut again, v, data);
        assert_eq!(&again[..], bytes);
    }
});
