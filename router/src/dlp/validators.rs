//! Checksum and structure validators, run only on candidates the patterns found. Each takes the
//! matched text (separators included) and says whether it is a real instance of its type.

/// A validator named in a rule pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Validator {
    Luhn,
    Iban,
    CnResidentId,
    CnUscc,
    HkId,
    TwId,
    UsSsn,
    UsItin,
    UkNhs,
    UkNino,
    Ipv4,
    Ipv6,
    /// Shannon entropy of the secret part at or above the rule's `min_entropy`, with both
    /// letters and digits (generated keys have both; names and phrases rarely do).
    Entropy,
}

impl Validator {
    pub fn check(self, text: &str, min_entropy: f64) -> bool {
        match self {
            Self::Luhn => luhn(text),
            Self::Iban => iban(text),
            Self::CnResidentId => cn_resident_id(text),
            Self::CnUscc => cn_uscc(text),
            Self::HkId => hk_id(text),
            Self::TwId => tw_id(text),
            Self::UsSsn => us_ssn(text),
            Self::UsItin => us_itin(text),
            Self::UkNhs => uk_nhs(text),
            Self::UkNino => uk_nino(text),
            Self::Ipv4 => text.parse::<std::net::Ipv4Addr>().is_ok(),
            Self::Ipv6 => ipv6(text),
            Self::Entropy => {
                text.bytes().any(|b| b.is_ascii_digit())
                    && text.bytes().any(|b| b.is_ascii_alphabetic())
                    && shannon_entropy(text) >= min_entropy
            }
        }
    }
}

/// An IPv6 address with at least two groups and four hex digits: `::` or `a::b` in code are not
/// addresses anyone means.
pub fn ipv6(text: &str) -> bool {
    // Without `::` an address has all eight groups (the pattern admits no IPv4 tail): a time
    // such as `12:34:56` is not one, and the parser need not say so. One pass over the bytes.
    let (mut colons, mut double, mut after_colon) = (0, false, false);
    for b in text.bytes() {
        let colon = b == b':';
        colons += usize::from(colon);
        double |= colon && after_colon;
        after_colon = colon;
    }
    if !double && colons != 7 {
        return false;
    }
    let groups = text.split(':').filter(|g| !g.is_empty()).count();
    let hex = text.bytes().filter(u8::is_ascii_hexdigit).count();
    groups >= 2 && hex >= 4 && text.parse::<std::net::Ipv6Addr>().is_ok()
}

/// A candidate's characters as a validator reads them: on the stack, since validators run on
/// every candidate, and every validated entity fits (a longer candidate spills to the heap).
type Chars = smallvec::SmallVec<[u8; 48]>;

fn digits(text: &str) -> Chars {
    text.bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect()
}

fn alnum_upper(text: &str) -> Chars {
    text.bytes()
        .filter(u8::is_ascii_alphanumeric)
        .map(|b| b.to_ascii_uppercase())
        .collect()
}

/// Payment cards: 13 to 19 digits, an issuer prefix (3 to 6, or 2221 to 2720), Luhn.
pub fn luhn(text: &str) -> bool {
    // The issuer prefix first, before the digits are gathered: most long numbers fail it.
    let mut lead = text.bytes().filter(u8::is_ascii_digit);
    match lead.next() {
        Some(b'3'..=b'6') => {}
        Some(b'2') => {
            let prefix4 = lead.take(3).fold(2u32, |a, b| a * 10 + u32::from(b - b'0'));
            if !(2221..=2720).contains(&prefix4) {
                return false;
            }
        }
        _ => return false,
    }
    let d = digits(text);
    if !(13..=19).contains(&d.len()) || d.iter().all(|&x| x == d[0]) {
        return false;
    }
    // An 18-digit number shaped like a resident ID (province and birth date) is not a card,
    // even when it happens to pass Luhn (one in ten do).
    if d.len() == 18 && cn_id_shaped(&d) {
        return false;
    }
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            let x = u32::from(x);
            if i % 2 == 1 {
                let y = x * 2;
                if y > 9 { y - 9 } else { y }
            } else {
                x
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// ISO 13616 IBAN: the country's length, then mod 97 == 1.
pub fn iban(text: &str) -> bool {
    let s = alnum_upper(text);
    if s.len() < 15
        || !s[..2].iter().all(u8::is_ascii_alphabetic)
        || !s[2..4].iter().all(u8::is_ascii_digit)
    {
        return false;
    }
    let Some(len) = iban_length(&s[..2]) else {
        return false;
    };
    if s.len() != len {
        return false;
    }
    let mut rem: u32 = 0;
    for &c in s[4..].iter().chain(&s[..4]) {
        if c.is_ascii_digit() {
            rem = (rem * 10 + u32::from(c - b'0')) % 97;
        } else {
            let v = u32::from(c - b'A') + 10;
            rem = (rem * 100 + v) % 97;
        }
    }
    rem == 1
}

fn iban_length(country: &[u8]) -> Option<usize> {
    const LENGTHS: &[(&[u8; 2], usize)] = &[
        (b"AD", 24),
        (b"AE", 23),
        (b"AL", 28),
        (b"AT", 20),
        (b"AZ", 28),
        (b"BA", 20),
        (b"BE", 16),
        (b"BG", 22),
        (b"BH", 22),
        (b"BR", 29),
        (b"BY", 28),
        (b"CH", 21),
        (b"CR", 22),
        (b"CY", 28),
        (b"CZ", 24),
        (b"DE", 22),
        (b"DK", 18),
        (b"DO", 28),
        (b"EE", 20),
        (b"EG", 29),
        (b"ES", 24),
        (b"FI", 18),
        (b"FO", 18),
        (b"FR", 27),
        (b"GB", 22),
        (b"GE", 22),
        (b"GI", 23),
        (b"GL", 18),
        (b"GR", 27),
        (b"GT", 28),
        (b"HR", 21),
        (b"HU", 28),
        (b"IE", 22),
        (b"IL", 23),
        (b"IQ", 23),
        (b"IS", 26),
        (b"IT", 27),
        (b"JO", 30),
        (b"KW", 30),
        (b"KZ", 20),
        (b"LB", 28),
        (b"LC", 32),
        (b"LI", 21),
        (b"LT", 20),
        (b"LU", 20),
        (b"LV", 21),
        (b"MC", 27),
        (b"MD", 24),
        (b"ME", 22),
        (b"MK", 19),
        (b"MR", 27),
        (b"MT", 31),
        (b"MU", 30),
        (b"NL", 18),
        (b"NO", 15),
        (b"PK", 24),
        (b"PL", 28),
        (b"PS", 29),
        (b"PT", 25),
        (b"QA", 29),
        (b"RO", 24),
        (b"RS", 22),
        (b"SA", 24),
        (b"SC", 31),
        (b"SE", 24),
        (b"SI", 19),
        (b"SK", 24),
        (b"SM", 27),
        (b"ST", 25),
        (b"SV", 28),
        (b"TL", 23),
        (b"TN", 24),
        (b"TR", 26),
        (b"UA", 29),
        (b"VA", 22),
        (b"VG", 24),
        (b"XK", 20),
    ];
    LENGTHS
        .iter()
        .find(|(c, _)| &c[..] == country)
        .map(|&(_, n)| n)
}

/// Chinese resident identity numbers: 18 characters (province, a real birth date, sequence,
/// ISO 7064 MOD 11-2 check character) or the legacy 15-digit form (province and date).
pub fn cn_resident_id(text: &str) -> bool {
    let s = alnum_upper(text);
    match s.len() {
        18 => {
            if !s[..17].iter().all(u8::is_ascii_digit) || !(s[17].is_ascii_digit() || s[17] == b'X')
            {
                return false;
            }
            if !cn_province(&s[..2]) || !real_date(num(&s[6..10]), num(&s[10..12]), num(&s[12..14]))
            {
                return false;
            }
            const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
            const MAP: &[u8; 11] = b"10X98765432";
            let sum: u32 = s[..17]
                .iter()
                .zip(WEIGHTS)
                .map(|(&c, w)| u32::from(c - b'0') * w)
                .sum();
            MAP[(sum % 11) as usize] == s[17]
        }
        15 => {
            s.iter().all(u8::is_ascii_digit)
                && cn_province(&s[..2])
                && real_date(1900 + num(&s[6..8]), num(&s[8..10]), num(&s[10..12]))
        }
        _ => false,
    }
}

/// Province code and a real birth date where a resident ID has them (digits as values 0-9).
fn cn_id_shaped(d: &[u8]) -> bool {
    let n = |r: std::ops::Range<usize>| d[r].iter().fold(0u32, |a, &x| a * 10 + u32::from(x));
    d.len() >= 14 && cn_province_code(n(0..2)) && real_date(n(6..10), n(10..12), n(12..14))
}

fn num(d: &[u8]) -> u32 {
    d.iter().fold(0, |acc, &c| acc * 10 + u32::from(c - b'0'))
}

fn cn_province(code: &[u8]) -> bool {
    cn_province_code(num(code))
}

fn cn_province_code(code: u32) -> bool {
    matches!(
        code,
        11..=15 | 21..=23 | 31..=37 | 41..=46 | 50..=54 | 61..=65 | 71 | 81 | 82 | 83 | 91
    )
}

fn real_date(year: u32, month: u32, day: u32) -> bool {
    if !(1800..=2100).contains(&year) || !(1..=12).contains(&month) || day == 0 {
        return false;
    }
    let leap = (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400);
    let days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    day <= days
}

/// Chinese Unified Social Credit Codes (GB 32100): 18 symbols from a 31-symbol alphabet without
/// I, O, S, V, Z; a registration authority and category code; the embedded organisation code
/// (positions 9-17, GB 11714) with its own mod-11 check; and the final check symbol with weights
/// 3^i mod 31. A digit string shaped like a resident ID is not taken for a code.
pub fn cn_uscc(text: &str) -> bool {
    const ALPHABET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
    // Each symbol's value, or 31 for a byte outside the alphabet.
    const VALUE: [u8; 256] = {
        let mut table = [31u8; 256];
        let mut i = 0;
        while i < ALPHABET.len() {
            table[ALPHABET[i] as usize] = i as u8;
            i += 1;
        }
        table
    };
    // The registering authority and kind come first: most 18-digit numbers fail there, so
    // they are read before the rest is gathered.
    let mut lead = text
        .bytes()
        .filter(u8::is_ascii_alphanumeric)
        .map(|b| b.to_ascii_uppercase());
    match (lead.next(), lead.next()) {
        (Some(authority), Some(kind))
            if b"123456789ANY".contains(&authority) && b"1239".contains(&kind) => {}
        _ => return false,
    }
    let s = alnum_upper(text);
    if s.len() != 18 {
        return false;
    }
    let mut values = [0u32; 18];
    for (v, &c) in values.iter_mut().zip(&s) {
        match VALUE[usize::from(c)] {
            31 => return false,
            p => *v = u32::from(p),
        }
    }
    // A run of one symbol is a placeholder, not a code.
    if s.iter().all(|&c| c == s[0]) {
        return false;
    }
    if !org_code(&s[8..17]) {
        return false;
    }
    if s[..17].iter().all(u8::is_ascii_digit) {
        let d: Chars = s[..17].iter().map(|c| c - b'0').collect();
        if cn_id_shaped(&d) {
            return false;
        }
    }
    let mut weight = 1u32;
    let mut sum = 0u32;
    for v in &values[..17] {
        sum += v * weight;
        weight = weight * 3 % 31;
    }
    (31 - sum % 31) % 31 == values[17]
}

/// GB 11714 organisation codes: eight digits or letters and a mod-11 check (10 is `X`).
fn org_code(s: &[u8]) -> bool {
    const WEIGHTS: [u32; 8] = [3, 7, 9, 10, 5, 8, 4, 2];
    let value = |c: u8| {
        if c.is_ascii_digit() {
            u32::from(c - b'0')
        } else {
            u32::from(c - b'A') + 10
        }
    };
    let sum: u32 = s[..8].iter().zip(WEIGHTS).map(|(&c, w)| value(c) * w).sum();
    let check = match 11 - sum % 11 {
        11 => b'0',
        10 => b'X',
        n => b'0' + n as u8,
    };
    s[8] == check
}

/// Hong Kong identity cards: one or two letters, six digits, a check digit or A (mod 11).
pub fn hk_id(text: &str) -> bool {
    let s = alnum_upper(text);
    let (letters, rest) = match s.iter().position(u8::is_ascii_digit) {
        Some(p @ 1..=2) => s.split_at(p),
        _ => return false,
    };
    if rest.len() != 7
        || !rest[..6].iter().all(u8::is_ascii_digit)
        || !letters.iter().all(u8::is_ascii_alphabetic)
    {
        return false;
    }
    let mut values: Vec<u32> = Vec::with_capacity(8);
    if letters.len() == 1 {
        values.push(36);
    }
    values.extend(letters.iter().map(|&c| u32::from(c - b'A') + 10));
    values.extend(rest[..6].iter().map(|&c| u32::from(c - b'0')));
    let sum: u32 = values.iter().zip((2..=9).rev()).map(|(v, w)| v * w).sum();
    let check = match rest[6] {
        b'A' => 10,
        c if c.is_ascii_digit() => u32::from(c - b'0'),
        _ => return false,
    };
    (sum + check).is_multiple_of(11)
}

/// Taiwan national identification numbers: a letter, 1 or 2, eight digits (mod 10).
pub fn tw_id(text: &str) -> bool {
    const CODES: &[u8; 26] = &[
        10, 11, 12, 13, 14, 15, 16, 17, 34, 18, 19, 20, 21, 22, 35, 23, 24, 25, 26, 27, 28, 29, 32,
        30, 31, 33,
    ];
    let s = alnum_upper(text);
    if s.len() != 10
        || !s[0].is_ascii_uppercase()
        || !matches!(s[1], b'1' | b'2')
        || !s[1..].iter().all(u8::is_ascii_digit)
    {
        return false;
    }
    let code = u32::from(CODES[usize::from(s[0] - b'A')]);
    let weights = [8, 7, 6, 5, 4, 3, 2, 1, 1];
    let sum = code / 10
        + (code % 10) * 9
        + s[1..]
            .iter()
            .zip(weights)
            .map(|(&c, w)| u32::from(c - b'0') * w)
            .sum::<u32>();
    sum.is_multiple_of(10)
}

/// US Social Security numbers: area not 000, 666 or 9xx; group not 00; serial not 0000.
pub fn us_ssn(text: &str) -> bool {
    let d = digits(text);
    if d.len() != 9 {
        return false;
    }
    let area = u32::from(d[0]) * 100 + u32::from(d[1]) * 10 + u32::from(d[2]);
    let group = u32::from(d[3]) * 10 + u32::from(d[4]);
    let serial = d[5..].iter().fold(0u32, |a, &x| a * 10 + u32::from(x));
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

/// US Individual Taxpayer Identification Numbers: 9xx, group 50-65, 70-88, 90-92 or 94-99.
pub fn us_itin(text: &str) -> bool {
    let d = digits(text);
    if d.len() != 9 || d[0] != 9 {
        return false;
    }
    let group = u32::from(d[3]) * 10 + u32::from(d[4]);
    matches!(group, 50..=65 | 70..=88 | 90..=92 | 94..=99)
}

/// UK NHS numbers: ten digits, mod 11 check digit.
pub fn uk_nhs(text: &str) -> bool {
    let d = digits(text);
    if d.len() != 10 || d.iter().all(|&x| x == d[0]) {
        return false;
    }
    let sum: u32 = d[..9]
        .iter()
        .zip((2..=10).rev())
        .map(|(&x, w)| u32::from(x) * w)
        .sum();
    let check = 11 - sum % 11;
    let check = if check == 11 { 0 } else { check };
    check != 10 && check == u32::from(d[9])
}

/// UK National Insurance numbers: two prefix letters (with the excluded letters and pairs), six
/// digits, a suffix A to D.
pub fn uk_nino(text: &str) -> bool {
    let s = alnum_upper(text);
    if s.len() != 9
        || !s[..2].iter().all(u8::is_ascii_uppercase)
        || !s[2..8].iter().all(u8::is_ascii_digit)
        || !(b'A'..=b'D').contains(&s[8])
    {
        return false;
    }
    let bad_first = b"DFIQUV";
    let bad_second = b"DFIOQUV";
    let bad_pairs: [&[u8; 2]; 7] = [b"BG", b"GB", b"NK", b"KN", b"TN", b"NT", b"ZZ"];
    !bad_first.contains(&s[0])
        && !bad_second.contains(&s[1])
        && !bad_pairs.iter().any(|p| &s[..2] == *p)
}

/// Shannon entropy in bits per character.
pub fn shannon_entropy(text: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in text.bytes() {
        counts[usize::from(b)] += 1;
    }
    let n = text.len() as f64;
    if n == 0.0 {
        return 0.0;
    }
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cards() {
        assert!(luhn("4111 1111 1111 1111"));
        assert!(luhn("5500-0000-0000-0004"));
        assert!(luhn("6212345678901265")); // UnionPay, 16 digits
        assert!(luhn("6217000010012345677")); // UnionPay, 19 digits
        assert!(!luhn("1234567812345670")); // passes Luhn, no issuer starts with 1
        assert!(luhn("2223 0031 2200 3222")); // Mastercard's 2-series, 2221 to 2720
        assert!(!luhn("2000000000000006")); // passes Luhn, below the 2-series
        assert!(!luhn("2721000000000004")); // passes Luhn, above it
        assert!(!luhn("4111 1111 1111 1112"));
        assert!(!luhn("0000000000000000"));
    }

    #[test]
    fn ibans() {
        assert!(iban("GB82 WEST 1234 5698 7654 32"));
        assert!(iban("DE89370400440532013000"));
        assert!(iban("FR1420041010050500013M02606"));
        assert!(!iban("GB82 WEST 1234 5698 7654 33"));
        assert!(!iban("DE8937040044053201300")); // wrong length
        assert!(!iban("XX89370400440532013000"));
    }

    #[test]
    fn chinese_resident_ids() {
        assert!(cn_resident_id("11010519491231002X"));
        assert!(cn_resident_id("440524188001010014"));
        assert!(!cn_resident_id("110105194912310021")); // check character
        assert!(!cn_resident_id("110105194902300023")); // 30 February
        assert!(!cn_resident_id("990105194912310025")); // province
        assert!(cn_resident_id("110105491231002")); // legacy 15 digits
        assert!(!cn_resident_id("110105491331002")); // month 13
    }

    #[test]
    fn chinese_credit_codes() {
        assert!(cn_uscc("91350100M000100Y43"));
        assert!(cn_uscc("911100007109288314"));
        assert!(!cn_uscc("91350100M000100Y44"));
        assert!(!cn_uscc("91350100M0001O0Y43")); // O is not in the alphabet
    }

    #[test]
    fn hong_kong_and_taiwan() {
        assert!(hk_id("A123456(3)"));
        assert!(hk_id("AB9876543"));
        assert!(!hk_id("A123456(4)"));
        assert!(tw_id("A123456789"));
        assert!(!tw_id("A123456788"));
        assert!(!tw_id("A323456789"));
    }

    #[test]
    fn us_and_uk() {
        assert!(us_ssn("536-22-1234"));
        assert!(!us_ssn("666-22-1234"));
        assert!(!us_ssn("900-22-1234"));
        assert!(!us_ssn("536-00-1234"));
        assert!(!us_ssn("536-22-0000"));
        assert!(us_itin("912-70-1234"));
        assert!(!us_itin("912-40-1234"));
        assert!(uk_nhs("943 476 5919"));
        assert!(!uk_nhs("943 476 5918"));
        assert!(uk_nino("AB123456C"));
        assert!(!uk_nino("QQ123456C"));
        assert!(!uk_nino("GB123456A"));
        assert!(!uk_nino("AB123456E"));
    }

    #[test]
    fn entropy() {
        assert!(shannon_entropy("aaaaaaaa") < 0.01);
        assert!(shannon_entropy("kX9#mQ2$vL7@pR4!") > 3.5);
    }
}
