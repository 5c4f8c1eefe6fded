//! Normalisation before scanning: full-width digits, letters and symbols (the Halfwidth and
//! Fullwidth Forms block) and the ideographic space become their NFKC forms, so `１３８１２３４５６７８`
//! is found like `13812345678`. Offsets found in the normalised text map back to UTF-8 byte
//! offsets of the original through a sparse anchor list.

use std::borrow::Cow;

/// Text ready to scan, and the way back to the original's offsets.
pub struct Normalized<'a> {
    pub text: Cow<'a, str>,
    /// (normalised offset, original offset) at each point where the two shift; empty when the
    /// text was not changed.
    anchors: Vec<(usize, usize)>,
}

impl Normalized<'_> {
    /// The original byte offset of a normalised offset.
    pub fn original(&self, offset: usize) -> usize {
        if self.anchors.is_empty() {
            return offset;
        }
        let i = self.anchors.partition_point(|&(n, _)| n <= offset) - 1;
        let (n, o) = self.anchors[i];
        o + (offset - n)
    }
}

/// U+3000 IDEOGRAPHIC SPACE and the full-width forms of ASCII (U+FF01..U+FF5E) are the characters
/// NFKC maps here, except the sentence punctuation of Chinese prose (，！？；), which no rule
/// needs: leaving it alone lets most Chinese text be scanned in place. The rest of the block
/// (half-width katakana and hangul, full-width currency signs such as ￥) holds nothing a rule
/// looks for.
fn mapped(c: char) -> bool {
    c == '\u{3000}'
        || (('\u{FF01}'..='\u{FF5E}').contains(&c) && !matches!(c, '，' | '！' | '？' | '；'))
}

pub fn normalize(text: &str) -> Normalized<'_> {
    // Every mapped character is encoded starting with 0xE3 (U+3000) or 0xEF (U+FFxx).
    let bytes = text.as_bytes();
    let needed = memchr::memchr2_iter(0xEF, 0xE3, bytes).any(|i| {
        text.get(i..)
            .and_then(|t| t.chars().next())
            .is_some_and(mapped)
    });
    if !needed {
        return Normalized {
            text: Cow::Borrowed(text),
            anchors: Vec::new(),
        };
    }
    let mut out = String::with_capacity(text.len());
    let mut anchors = vec![(0, 0)];
    let mut copied = 0;
    let mut pos = 0;
    while let Some(rel) = memchr::memchr2(0xEF, 0xE3, &bytes[pos..]) {
        let i = pos + rel;
        // `i` is a lead byte of a 3-byte sequence (0xE3 and 0xEF never continue one).
        let Some(c) = text.get(i..).and_then(|t| t.chars().next()) else {
            break;
        };
        let len = c.len_utf8();
        if mapped(c) {
            out.push_str(&text[copied..i]);
            anchors.push((out.len(), i));
            unicode_normalization::char::decompose_compatible(c, |d| out.push(d));
            anchors.push((out.len(), i + len));
            copied = i + len;
        }
        pos = i + len;
    }
    out.push_str(&text[copied..]);
    Normalized {
        text: Cow::Owned(out),
        anchors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_is_borrowed() {
        let n = normalize("call 13812345678 now：谢谢");
        assert_eq!(n.text, "call 13812345678 now:谢谢");
        let n = normalize("好的，谢谢！金额￥100");
        assert!(matches!(n.text, Cow::Borrowed(_)));
        let n = normalize("plain text");
        assert!(matches!(n.text, Cow::Borrowed(_)));
    }

    #[test]
    fn full_width_digits_map_back() {
        let original = "电话：１３８１２３４５６７８。";
        let n = normalize(original);
        assert_eq!(n.text, "电话:13812345678。");
        let start = n.text.find('1').unwrap();
        let end = start + 11;
        let (s, e) = (n.original(start), n.original(end));
        assert_eq!(&original[s..e], "１３８１２３４５６７８");
    }
}
