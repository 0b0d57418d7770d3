//! `cargo fuzz run meta_line_footer`: the line footer decoder on arbitrary bytes. It must not
//! panic; whatever decodes re-encodes to a footer that decodes to the same value.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lightnvm_ftl::meta::line_footer;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = line_footer::decode(data) {
        let mut buf = vec![0u8; line_footer::bytes(f.entries.len())];
        line_footer::encode(f.line, f.generation, &f.entries, &mut buf);
        assert_eq!(line_footer::decode(&buf), Ok(f));
    }
});
