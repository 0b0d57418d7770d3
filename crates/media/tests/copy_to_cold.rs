//! `copy_to_cold`: the streaming copy (aligned destination, whole cache lines) and the plain
//! one (anything else) both copy exactly the bytes given, and nothing around them.

use lightnvm_media::copy_to_cold;

#[test]
fn copies_exactly_the_bytes_given_at_every_alignment_and_length() {
    let src: Vec<u8> = (0..16384 + 128).map(|i| (i * 7 + 3) as u8).collect();
    for len in [0usize, 1, 15, 16, 63, 64, 65, 128, 4096, 4096 + 16, 16384] {
        for dst_off in [0usize, 1, 8, 16, 32, 48] {
            for src_off in [0usize, 1, 16] {
                // A 64-byte aligned buffer, guard bytes around the destination.
                let mut buf = vec![0u128; (16384 + 256) / 16];
                let base = buf.as_mut_ptr().cast::<u8>();
                let bytes = unsafe { std::slice::from_raw_parts_mut(base, buf.len() * 16) };
                bytes.fill(0xA5);
                let s = &src[src_off..src_off + len];
                // SAFETY: `dst_off + len` is within the buffer; `src` is another allocation.
                unsafe { copy_to_cold(base.add(dst_off), s) };
                let bytes = unsafe { std::slice::from_raw_parts(base, buf.len() * 16) };
                assert_eq!(&bytes[dst_off..dst_off + len], s, "len {len} at {dst_off}");
                assert!(
                    bytes[..dst_off].iter().all(|&b| b == 0xA5),
                    "bytes before the destination changed (len {len} at {dst_off})"
                );
                assert!(
                    bytes[dst_off + len..].iter().all(|&b| b == 0xA5),
                    "bytes after the destination changed (len {len} at {dst_off})"
                );
            }
        }
    }
}
