//! The sector-pattern generator: the contents of a sector written with a tag, and the tag a
//! sector's contents belong to.
//!
//! A tag's pattern is the tag itself (8 bytes, little endian) followed by a xorshift64 stream
//! seeded from the tag; tag 0 is all zeros (what a trimmed or never-written sector reads as).
//! Any change to a byte of a pattern makes it no tag's pattern. The bytes are part of the
//! on-media contract of `lightnvm fill`: images filled by one build must verify with the next.

/// Fills a sector with the pattern of `tag` (tag 0 = zeros).
pub fn fill_sector(buf: &mut [u8], tag: u64) {
    if tag == 0 {
        buf.fill(0);
        return;
    }
    let mut x = tag.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    buf[0..8].copy_from_slice(&tag.to_le_bytes());
    for chunk in buf[8..].chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
}

/// The tag whose pattern `buf` holds, if any (zeros = tag 0).
pub fn sector_tag(buf: &[u8]) -> Option<u64> {
    let tag = u64::from_le_bytes(buf[0..8].try_into().unwrap());
    let mut want = vec![0u8; buf.len()];
    fill_sector(&mut want, tag);
    (want == buf).then_some(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SS: usize = 4096;

    fn sector(tag: u64) -> Vec<u8> {
        let mut buf = vec![0xA5u8; SS];
        fill_sector(&mut buf, tag);
        buf
    }

    #[test]
    fn roundtrip() {
        for tag in [
            1,
            2,
            3,
            255,
            1 << 40,
            (7 << 40) ^ 12345,
            u64::MAX - 1,
            u64::MAX,
        ] {
            assert_eq!(sector_tag(&sector(tag)), Some(tag), "tag {tag}");
        }
    }

    #[test]
    fn zeros_are_tag_0() {
        assert!(sector(0).iter().all(|&b| b == 0));
        assert_eq!(sector_tag(&[0u8; SS]), Some(0));
    }

    #[test]
    fn different_tags_give_different_sectors() {
        let a = sector(41);
        let b = sector(42);
        assert_ne!(a, b);
        // Not only the header: the streams differ too.
        assert_ne!(a[8..], b[8..]);
    }

    #[test]
    fn a_flipped_byte_is_not_recognized() {
        for tag in [0u64, 1, 99, 1 << 40] {
            for at in [0, 7, 8, 9, 2048, SS - 1] {
                let mut s = sector(tag);
                s[at] ^= 0x10;
                assert_eq!(sector_tag(&s), None, "tag {tag}, byte {at}");
            }
        }
    }

    #[test]
    fn another_tags_header_is_not_recognized() {
        let mut s = sector(5);
        s[0..8].copy_from_slice(&6u64.to_le_bytes());
        assert_eq!(sector_tag(&s), None);
    }

    /// The bytes are a contract (images written by `lightnvm fill` before must verify after):
    /// pin words of two patterns (the second is `lightnvm fill --seed 11`'s tag of LBA 0).
    #[test]
    fn the_bytes_do_not_change() {
        let word = |s: &[u8], i: usize| u64::from_le_bytes(s[i * 8..i * 8 + 8].try_into().unwrap());
        let s = sector(1);
        assert_eq!(
            [
                word(&s, 0),
                word(&s, 1),
                word(&s, 2),
                word(&s, 3),
                word(&s, 511)
            ],
            [
                1,
                0xdc1b_77ae_0bf3_4dad,
                0x64f0_eeb9_026e_6076,
                0x7b07_ce91_e590_6136,
                0x11d8_b917_cc58_781b
            ]
        );
        let s = sector((11 << 40) ^ 1);
        assert_eq!(
            [word(&s, 0), word(&s, 1), word(&s, 2), word(&s, 3)],
            [
                0xb00_0000_0001,
                0xaebd_589c_0bf3_4dad,
                0x0d06_c955_666e_6076,
                0xaf23_0b3b_5958_6136
            ]
        );
    }
}
