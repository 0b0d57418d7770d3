//! `cargo fuzz run meta_checkpoint`: the checkpoint decoders (claimed length and whole) on
//! arbitrary bytes. They must not panic; whatever decodes re-encodes to a checkpoint that
//! decodes to the same value.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lightnvm_ftl::meta::checkpoint;

fuzz_target!(|data: &[u8]| {
    let claimed = checkpoint::claimed_bytes(data);
    if let Ok(c) = checkpoint::decode(data) {
        // With the optional sections (marks, voided writes) counted.
        assert_eq!(claimed, Ok(checkpoint::encoded_bytes(&c)));
        let again = checkpoint::encode(&c);
        assert_eq!(checkpoint::decode(&again), Ok(c));
    }
});
