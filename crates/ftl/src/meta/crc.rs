//! CRC32C of sector data with a shortcut for a zero tail.
//!
//! A sector that ends in zeros (zero-filled blocks, sparse files, and the data `lightnvm sim`
//! writes: an 8-byte fingerprint and zeros) costs its non-zero part plus one 32×32 GF(2)
//! matrix product, instead of 4 KiB of CRC. CRC32C is linear: over zero bytes the register
//! (the complement of the running CRC) is only multiplied by a fixed operator, so k zero
//! bytes are one precomputed operator `Z^k`. Data that does not end in zeros pays one
//! comparison of its last 64 bytes.
//!
//! The data itself goes through whichever of two crates is faster on the CPU (tests check
//! the two agree): `crc-fast` (CRC-32/ISCSI is CRC32C), which mixes carry-less multiplies
//! with `crc32` instructions, or the `crc32c` crate's three-way `crc32` instructions. On an
//! Intel host with AVX-512, 4 KiB took 46–60 ns with the first against 177 ns with the
//! second; on an AMD EPYC (Zen 3: AVX2, no AVX-512), 305–415 ns against 230–300 (its
//! carry-less multiplies are slower, and `crc-fast` has no AVX2 path). So: `crc-fast` where
//! its AVX-512 paths run or the CPU is not AMD's, the `crc32c` crate on AMD CPUs without
//! AVX-512 ([`folds_fast`]).

use std::sync::OnceLock;

/// Zero tails are skipped in units of this many bytes.
const UNIT: usize = 64;
/// Operators are tabled for tails of up to this many units (4 KiB); longer tails repeat the
/// largest.
const MAX_UNITS: usize = 64;
/// Tails shorter than this are not worth an operator.
const MIN_TAIL: usize = 256;

/// A linear operator on the 32-bit CRC register: column `i` is the image of bit `i`.
type Op = [u32; 32];

fn apply(op: &Op, v: u32) -> u32 {
    // Branch-free (the bits of a CRC are random: a branch per bit mispredicts half the time).
    let mut sum = 0;
    for (i, col) in op.iter().enumerate() {
        sum ^= col & 0u32.wrapping_sub((v >> i) & 1);
    }
    sum
}

/// `a` after `b`.
fn compose(a: &Op, b: &Op) -> Op {
    let mut out = [0u32; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = apply(a, b[i]);
    }
    out
}

/// `ZEROS[j]`: the register operator for `j * UNIT` zero bytes.
fn zeros_ops() -> &'static [Op; MAX_UNITS + 1] {
    static OPS: OnceLock<[Op; MAX_UNITS + 1]> = OnceLock::new();
    OPS.get_or_init(|| {
        // One zero bit (reflected CRC32C): shift right, xor the polynomial if bit 0 was set.
        let mut bit = [0u32; 32];
        bit[0] = 0x82F6_3B78;
        for (i, b) in bit.iter_mut().enumerate().skip(1) {
            *b = 1 << (i - 1);
        }
        let mut byte = bit;
        for _ in 0..7 {
            byte = compose(&bit, &byte);
        }
        let mut unit = byte;
        for _ in 0..UNIT - 1 {
            unit = compose(&byte, &unit);
        }
        let mut identity = [0u32; 32];
        for (i, b) in identity.iter_mut().enumerate() {
            *b = 1 << i;
        }
        let mut ops = [identity; MAX_UNITS + 1];
        for j in 1..=MAX_UNITS {
            ops[j] = compose(&unit, &ops[j - 1]);
        }
        ops
    })
}

/// `crc32c::crc32c(b)` of 12 bytes (an OOB identity: an LBA and a stamp), the small
/// checksum every sector's encoding and decoding computes: two instructions where SSE4.2 is
/// available (the crate's general path costs several times that at this size).
pub fn of12(b: &[u8; 12]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("sse4.2") {
            // SAFETY: the CPU supports SSE4.2 (just checked).
            return unsafe { of12_sse42(b) };
        }
    }
    crc32c::crc32c(b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn of12_sse42(b: &[u8; 12]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u32, _mm_crc32_u64};
    let lo = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
    let hi = u32::from_le_bytes(b[8..].try_into().expect("4 bytes"));
    !_mm_crc32_u32(_mm_crc32_u64(u64::from(u32::MAX), lo) as u32, hi)
}

/// Whether `crc-fast` is the faster of the two crates on this CPU (see the module's text):
/// it has AVX-512 with carry-less multiplies, or is not AMD's. Decided once.
fn folds_fast() -> bool {
    static FAST: OnceLock<bool> = OnceLock::new();
    *FAST.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            let avx512 = std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("vpclmulqdq");
            // CPUID leaf 0: the vendor's name in EBX, EDX, ECX.
            let id = std::arch::x86_64::__cpuid(0);
            let amd = (id.ebx, id.edx, id.ecx) == (0x6874_7541, 0x6974_6e65, 0x444d_4163);
            avx512 || !amd
        }
        #[cfg(not(target_arch = "x86_64"))]
        true
    })
}

/// `crc32c::crc32c_append(crc, data)`, by the faster crate ([`folds_fast`]).
#[inline]
fn plain(crc: u32, data: &[u8]) -> u32 {
    plain_by(folds_fast(), crc, data)
}

/// [`plain`] by `crc-fast` if `fold`, else by the `crc32c` crate.
#[inline]
fn plain_by(fold: bool, crc: u32, data: &[u8]) -> u32 {
    if !fold {
        return crc32c::crc32c_append(crc, data);
    }
    if crc == 0 {
        return crc_fast::crc32_iscsi(data);
    }
    if data.len().is_multiple_of(UNIT) {
        // Linearity again: the CRC so far, carried over the data's length in zeros, plus
        // the data's own CRC (cheaper than `crc-fast`'s general start from a register).
        return skip_zero_units(crc, data.len() / UNIT) ^ crc_fast::crc32_iscsi(data);
    }
    // The register continues from the complement of the CRC so far.
    let mut d =
        crc_fast::Digest::new_with_init_state(crc_fast::CrcAlgorithm::Crc32Iscsi, (!crc).into());
    d.update(data);
    d.finalize() as u32
}

/// `crc32c::crc32c_append(crc, data)`, skipping the work for a tail of zeros.
pub fn append(crc: u32, data: &[u8]) -> u32 {
    let len = data.len();
    if len < MIN_TAIL || data[len - 1] != 0 {
        return plain(crc, data);
    }
    // Whole zero units at the end (the OR of each unit vectorizes).
    let units = data
        .rchunks_exact(UNIT)
        .take_while(|c| c.iter().fold(0u8, |a, &b| a | b) == 0)
        .count();
    if units * UNIT < MIN_TAIL {
        return plain(crc, data);
    }
    let head = len - units * UNIT;
    let reg = !plain(crc, &data[..head]);
    !skip_zero_units(reg, units)
}

/// `crc32c::crc32c_append(crc, &[0; n])`: the zero bytes as operators, without reading them
/// (for data known to be zeros).
pub fn append_zeros(crc: u32, n: usize) -> u32 {
    let (units, rest) = (n / UNIT, n % UNIT);
    let reg = skip_zero_units(!crc, units);
    plain(!reg, &[0u8; UNIT][..rest])
}

/// The CRC register after `units` zero units.
fn skip_zero_units(mut reg: u32, units: usize) -> u32 {
    let ops = zeros_ops();
    let mut left = units;
    while left > 0 {
        let j = left.min(MAX_UNITS);
        reg = apply(&ops[j], reg);
        left -= j;
    }
    reg
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn equals_the_plain_crc(
            crc in any::<u32>(),
            head in prop::collection::vec(any::<u8>(), 0..300),
            zeros in 0usize..9000,
            tail in prop::collection::vec(any::<u8>(), 0..3),
        ) {
            let mut data = head;
            data.resize(data.len() + zeros, 0);
            data.extend(tail);
            prop_assert_eq!(append(crc, &data), crc32c::crc32c_append(crc, &data));
            prop_assert_eq!(append_zeros(crc, zeros), crc32c::crc32c_append(crc, &vec![0; zeros]));
        }
    }

    proptest! {
        // Any bytes, any length up to two sectors (every SIMD path of `crc-fast` and its
        // tails), any running CRC: the same as the `crc32c` crate.
        #[test]
        fn random_data_equals_the_crate(
            crc in any::<u32>(),
            data in prop::collection::vec(any::<u8>(), 0..8300),
        ) {
            prop_assert_eq!(append(crc, &data), crc32c::crc32c_append(crc, &data));
        }

        // Whole units (sectors are), where the running CRC is carried by an operator.
        #[test]
        fn whole_units_equal_the_crate(
            crc in any::<u32>(),
            units in 0usize..140,
            seed in any::<u64>(),
        ) {
            let mut x = seed;
            let data: Vec<u8> = (0..units * UNIT)
                .map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (x >> 56) as u8
                })
                .collect();
            prop_assert_eq!(append(crc, &data), crc32c::crc32c_append(crc, &data));
        }
    }

    proptest! {
        // `crc-fast`'s path even on a CPU that uses the `crc32c` crate (whose path is the
        // crate itself): the same CRC.
        #[test]
        fn the_folding_path_agrees_on_every_cpu(
            crc in any::<u32>(),
            data in prop::collection::vec(any::<u8>(), 0..8300),
        ) {
            prop_assert_eq!(plain_by(true, crc, &data), crc32c::crc32c_append(crc, &data));
        }
    }

    proptest! {
        #[test]
        fn of12_equals_the_crate(b in any::<[u8; 12]>()) {
            prop_assert_eq!(of12(&b), crc32c::crc32c(&b));
        }
    }

    #[test]
    fn all_zero_and_fingerprint_sectors() {
        for n in [0usize, 64, 255, 256, 4096, 4096 * 3 + 64] {
            let mut d = vec![0u8; n];
            assert_eq!(append(7, &d), crc32c::crc32c_append(7, &d), "{n} zeros");
            if n >= 8 {
                d[..8].copy_from_slice(&0x0123_4567_89ab_cdefu64.to_le_bytes());
                assert_eq!(append(7, &d), crc32c::crc32c_append(7, &d), "{n}");
            }
        }
    }
}
