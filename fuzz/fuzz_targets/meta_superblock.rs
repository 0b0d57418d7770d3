//! `cargo fuzz run meta_superblock`: the superblock decoder on arbitrary bytes. It must not
//! panic; whatever decodes re-encodes to bytes that decode to the same encoding.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lightnvm_ftl::meta::superblock;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = superblock::decode(data) {
        let mut page = vec![0u8; superblock::BYTES];
        superblock::encode(&v, &mut page);
        let again = superblock::decode(&page).expect("an encoding decodes");
        let mut page2 = vec![0u8; superblock::BYTES];
        superblock::encode(&again, &mut page2);
        assert_eq!(page, page2);
    }
});
