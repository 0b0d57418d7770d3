//! `cargo fuzz run meta_line_header`: the line header decoder on arbitrary bytes. It must not
//! panic; whatever decodes re-encodes to bytes that decode to the same encoding.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lightnvm_ftl::meta::line_header;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = line_header::decode(data) {
        let mut page = vec![0u8; line_header::BYTES];
        line_header::encode(&v, &mut page);
        let again = line_header::decode(&page).expect("an encoding decodes");
        let mut page2 = vec![0u8; line_header::BYTES];
        line_header::encode(&again, &mut page2);
        assert_eq!(page, page2);
    }
});
