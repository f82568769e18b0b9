//! The latency histogram of a run and its text form: HdrHistogram's uncompressed V2 encoding,
//! hex encoded. Written here rather than by the crate's `serialization` feature, which the
//! workspace builds without (it pulls in flate2, nom and base64).
//!
//! Layout (big-endian), as HdrHistogram's V2 serializer writes it: cookie `0x1c849313`, counts
//! payload length (u32), normalizing index offset (u32, 0), significant digits (u32), lowest
//! discernible value (u64), highest trackable value (u64), integer-to-double ratio (f64, 1.0),
//! then the bins from the first to the highest non-empty one, each a zig-zag LEB128 varint (at
//! most 9 bytes, the ninth carrying 8 bits): a count, or minus the length of a run of empty bins.

use hdrhistogram::Histogram;

/// Lowest recordable latency (µs).
pub(super) const LOW_US: u64 = 1;
/// Highest recordable latency (µs): 60 s; longer ones saturate to it.
pub(super) const HIGH_US: u64 = 60_000_000;
/// Significant decimal digits of every value.
pub(super) const SIGFIG: u8 = 3;

const COOKIE: u32 = 0x1c84_9313;
const HEADER_LEN: usize = 40;

/// An empty histogram of the run's range and precision.
pub(super) fn new() -> Histogram<u64> {
    // Constant bounds that satisfy every precondition of `new_with_bounds` (low ≥ 1,
    // high ≥ 2·low, sigfig ≤ 5), so this cannot fail.
    Histogram::new_with_bounds(LOW_US, HIGH_US, SIGFIG).expect("constant histogram bounds are valid")
}

/// `h` in the V2 encoding, hex encoded.
pub(super) fn encode(h: &Histogram<u64>) -> String {
    let mut counts = Vec::new();
    if h.is_empty() {
        // What HdrHistogram writes for an empty histogram: the single bin 0, empty.
        put_varint(&mut counts, 0);
    } else {
        let total = h.len();
        let mut seen = 0u64;
        let mut zeros = 0i64;
        // `iter_all` yields every bin in index order, so its position is the bin index.
        for bin in h.iter_all() {
            let count = bin.count_at_value();
            if count == 0 {
                zeros += 1;
                continue;
            }
            match zeros {
                0 => {}
                1 => put_varint(&mut counts, zig_zag(0)),
                n => put_varint(&mut counts, zig_zag(-n)),
            }
            zeros = 0;
            put_varint(&mut counts, zig_zag(i64::try_from(count).unwrap_or(i64::MAX)));
            seen += count;
            if seen >= total {
                break;
            }
        }
    }

    let mut bytes = Vec::with_capacity(HEADER_LEN + counts.len());
    bytes.extend_from_slice(&COOKIE.to_be_bytes());
    bytes.extend_from_slice(&u32::try_from(counts.len()).unwrap_or(u32::MAX).to_be_bytes());
    bytes.extend_from_slice(&0u32.to_be_bytes());
    bytes.extend_from_slice(&u32::from(h.sigfig()).to_be_bytes());
    bytes.extend_from_slice(&h.low().to_be_bytes());
    bytes.extend_from_slice(&h.high().to_be_bytes());
    bytes.extend_from_slice(&1.0f64.to_be_bytes());
    bytes.extend_from_slice(&counts);

    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        text.push(char::from(HEX[usize::from(b >> 4)]));
        text.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    text
}

/// The histogram [`encode`] wrote. Only histograms of this module's range and precision are
/// accepted, since only those merge bin for bin; the error says what is wrong.
pub(super) fn decode(text: &str) -> Result<Histogram<u64>, &'static str> {
    let bytes = unhex(text).ok_or("is not hex")?;
    if bytes.len() < HEADER_LEN {
        return Err("is shorter than the V2 header");
    }
    let u32_at = |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let u64_at = |at: usize| (u64::from(u32_at(at)) << 32) | u64::from(u32_at(at + 4));
    if u32_at(0) != COOKIE {
        return Err("is not an uncompressed HdrHistogram V2 encoding");
    }
    if usize::try_from(u32_at(4)).ok() != Some(bytes.len() - HEADER_LEN) {
        return Err("has a counts length that disagrees with its size");
    }
    if u32_at(8) != 0 {
        return Err("has a normalizing index offset, which this client never writes");
    }
    if u32_at(12) != u32::from(SIGFIG) || u64_at(16) != LOW_US || u64_at(24) != HIGH_US {
        return Err("was recorded with another range or precision than 1 µs..60 s, 3 digits");
    }

    let mut h = new();
    // Bin values of an empty histogram of the same layout: recording a count at a bin's value
    // puts it in the same bin, without reimplementing HdrHistogram's index arithmetic.
    let layout = new();
    let mut bins = layout.iter_all().map(|bin| bin.value_iterated_to());
    let mut at = HEADER_LEN;
    while at < bytes.len() {
        let entry = un_zig_zag(get_varint(&bytes, &mut at).ok_or("ends inside a count")?);
        if entry < 0 {
            // A run of empty bins.
            let run = usize::try_from(entry.unsigned_abs()).map_err(|_| "has an impossible run")?;
            bins.nth(run - 1).ok_or("has more bins than its range")?;
            continue;
        }
        let value = bins.next().ok_or("has more bins than its range")?;
        if entry > 0 {
            h.record_n(value, entry.unsigned_abs()).map_err(|_| "has a bin outside its range")?;
        }
    }
    Ok(h)
}

fn zig_zag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn un_zig_zag(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

/// HdrHistogram's LEB128 variant: 7 bits a byte with a continuation bit, the ninth byte whole.
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    for _ in 0..8 {
        if v < 0x80 {
            out.push(v as u8);
            return;
        }
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..9 {
        let b = *bytes.get(*at)?;
        *at += 1;
        if i == 8 {
            return Some(v | (u64::from(b) << 56));
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    Some(v)
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    let text = text.as_bytes();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks_exact(2).map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_every_width() {
        for v in [0, 1, 0x7f, 0x80, 0x3fff, 0x4000, u64::from(u32::MAX), 1 << 55, 1 << 56, u64::MAX] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert!(buf.len() <= 9);
            let mut at = 0;
            assert_eq!(get_varint(&buf, &mut at), Some(v));
            assert_eq!(at, buf.len());
        }
        for n in [0i64, 1, -1, 12345, -12345, i64::MAX, i64::MIN] {
            assert_eq!(un_zig_zag(zig_zag(n)), n);
        }
    }

    #[test]
    fn histograms_round_trip_exactly() {
        let empty = new();
        assert_eq!(decode(&encode(&empty)).unwrap(), empty);

        let mut h = new();
        for v in [1, 2, 3, 3, 999, 1000, 1001, 2047, 123_456, 5_000_000, HIGH_US] {
            h.record(v).unwrap();
        }
        h.record_n(250, 1 << 40).unwrap();
        let back = decode(&encode(&h)).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.len(), h.len());
        assert_eq!(back.max(), h.max());
        assert_eq!(back.value_at_quantile(0.5), h.value_at_quantile(0.5));
    }

    #[test]
    fn foreign_or_damaged_encodings_are_refused() {
        let good = encode(&new());
        assert!(decode("xyz").is_err());
        assert!(decode(&good[..good.len() - 2]).is_err());
        let other = Histogram::<u64>::new_with_bounds(1, 1_000_000, 2).unwrap();
        assert!(decode(&encode(&other)).is_err());
    }
}
