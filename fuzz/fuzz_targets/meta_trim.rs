//! `cargo fuzz run meta_trim`: the trim record decoder on arbitrary bytes. It must not panic;
//! whatever decodes re-encodes to a record that decodes to the same ranges.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lightnvm_ftl::meta::trim;

fuzz_target!(|data: &[u8]| {
    if let Ok(ranges) = trim::decode(data) {
        let mut rec = vec![0u8; trim::BYTES];
        trim::encode(&ranges, &mut rec);
        assert_eq!(trim::decode(&rec), Ok(ranges));
    }
});
