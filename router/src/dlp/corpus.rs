//! A labelled corpus generator for measuring the scanner: English and Chinese sentences with
//! personal data right next to Chinese characters, in full-width digits, broken by spaces or
//! dashes, and hard negatives (look-alikes that fail their checksums, order numbers, timestamps,
//! amounts, version strings). Used by the quality test and the benches; deterministic per seed.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::json::{apply_request, scan_request};
use super::{ActionTable, Pseudonyms, Scanner};
use crate::api::{self, Api};

/// One sentence and the entities it holds, as byte spans.
pub struct Sample {
    pub text: String,
    pub labels: Vec<(&'static str, usize, usize)>,
    /// True when the sentence is a hard negative: nothing in it may be found.
    pub negative: bool,
    /// The entity type the sentence was written for (a look-alike's type when negative;
    /// `NONE` for the other hard negatives).
    pub kind: &'static str,
}

pub struct Generator {
    rng: StdRng,
}

const PROVINCES: [u32; 12] = [11, 12, 13, 31, 32, 33, 37, 44, 45, 51, 61, 65];
const TEMPLATES_EN: [&str; 6] = [
    "Please contact me at {} before Friday.",
    "My details: {}. Thanks!",
    "The customer record shows {} as primary.",
    "Send it to {}, it is urgent",
    "({}) was in the ticket",
    "Value={}; end",
];
const TEMPLATES_ZH: [&str; 6] = [
    "请联系{}，谢谢。",
    "客户资料：{}。",
    "他的信息是{}请核实",
    "（{}）已登记",
    "记录{}无误",
    "号码{}，",
];

impl Generator {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + self.rng.random_range(0..10u8)))
            .collect()
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.rng.random_range(0..items.len())]
    }

    /// A sentence around `value`; returns the sample with the value's span labelled.
    fn sentence(&mut self, entity: &'static str, value: &str, negative: bool) -> Sample {
        let template = if self.rng.random_bool(0.5) {
            self.pick(&TEMPLATES_EN)
        } else {
            self.pick(&TEMPLATES_ZH)
        };
        let (before, after) = template.split_once("{}").unwrap_or((template, ""));
        let text = format!("{before}{value}{after}");
        let labels = if negative {
            Vec::new()
        } else {
            vec![(entity, before.len(), before.len() + value.len())]
        };
        Sample {
            text,
            labels,
            negative,
            kind: entity,
        }
    }

    /// Full-width digits for some values, as people type them in Chinese input methods.
    fn maybe_full_width(&mut self, v: String) -> String {
        if self.rng.random_bool(0.15) {
            v.chars()
                .map(|c| {
                    if c.is_ascii_digit() {
                        char::from_u32(c as u32 - 0x30 + 0xFF10).unwrap_or(c)
                    } else {
                        c
                    }
                })
                .collect()
        } else {
            v
        }
    }

    fn luhn_digit(body: &str) -> char {
        let sum: u32 = body
            .bytes()
            .rev()
            .enumerate()
            .map(|(i, b)| {
                let d = u32::from(b - b'0');
                if i % 2 == 0 {
                    let x = d * 2;
                    if x > 9 { x - 9 } else { x }
                } else {
                    d
                }
            })
            .sum();
        char::from(b'0' + ((10 - sum % 10) % 10) as u8)
    }

    pub fn card(&mut self, valid: bool) -> String {
        let (prefix, len) = match self.rng.random_range(0..4) {
            0 => ("4".to_owned(), 16),
            1 => (format!("5{}", self.rng.random_range(1..6)), 16),
            2 => (
                "62".to_owned(),
                if self.rng.random_bool(0.5) { 16 } else { 19 },
            ),
            _ => ("37".to_owned(), 15),
        };
        let rest = self.digits(len - 1 - prefix.len());
        let body = format!("{prefix}{rest}");
        let mut check = Self::luhn_digit(&body);
        if !valid {
            check =
                char::from(b'0' + ((check as u8 - b'0' + 1 + self.rng.random_range(0..8)) % 10));
        }
        let number = format!("{body}{check}");
        match self.rng.random_range(0..3) {
            0 if len == 16 => number
                .as_bytes()
                .chunks(4)
                .map(|c| std::str::from_utf8(c).unwrap_or(""))
                .collect::<Vec<_>>()
                .join(" "),
            1 if len == 16 => number
                .as_bytes()
                .chunks(4)
                .map(|c| std::str::from_utf8(c).unwrap_or(""))
                .collect::<Vec<_>>()
                .join("-"),
            _ => number,
        }
    }

    pub fn cn_id(&mut self, valid: bool) -> String {
        const W: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
        const M: &[u8; 11] = b"10X98765432";
        let province = PROVINCES[self.rng.random_range(0..PROVINCES.len())];
        let body = format!(
            "{province}{:04}{}{:02}{:02}{}",
            self.rng.random_range(100..9999),
            self.rng.random_range(1950..2006),
            self.rng.random_range(1..13),
            self.rng.random_range(1..29),
            self.digits(3)
        );
        let sum: u32 = body
            .bytes()
            .zip(W)
            .map(|(b, w)| u32::from(b - b'0') * w)
            .sum();
        let mut check = M[(sum % 11) as usize];
        if !valid {
            check = M[((sum + 1 + self.rng.random_range(0..9)) % 11) as usize];
        }
        format!("{body}{}", check as char)
    }

    pub fn iban(&mut self, valid: bool) -> String {
        let (country, bban) = match self.rng.random_range(0..3) {
            0 => ("DE", self.digits(18)),
            1 => (
                "GB",
                format!(
                    "{}{}",
                    self.pick(&["WEST", "BARC", "NWBK", "LOYD"]),
                    self.digits(14)
                ),
            ),
            _ => ("FR", format!("{}{}", self.digits(21), self.digits(2))),
        };
        let numeric: String = format!("{bban}{country}00")
            .chars()
            .map(|c| {
                if c.is_ascii_uppercase() {
                    (c as u32 - 55).to_string()
                } else {
                    c.to_string()
                }
            })
            .collect();
        let rem = numeric
            .bytes()
            .fold(0u32, |r, b| (r * 10 + u32::from(b - b'0')) % 97);
        let mut check = 98 - rem;
        if !valid {
            // Any other value in 1..=98 fails mod 97.
            let shift = 1 + self.rng.random_range(0..40);
            check = if check > 50 {
                check - shift
            } else {
                check + shift
            };
        }
        format!("{country}{check:02}{bban}")
    }

    pub fn uscc(&mut self, valid: bool) -> String {
        const A: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
        let mut body: Vec<u8> = vec![b'9', b'1'];
        body.extend(self.digits(6).bytes());
        // The organisation code (GB 11714): eight symbols and their mod-11 check.
        let mut org_sum = 0u32;
        for w in [3u32, 7, 9, 10, 5, 8, 4, 2] {
            let c = A[self.rng.random_range(0..31)];
            org_sum += w * if c.is_ascii_digit() {
                u32::from(c - b'0')
            } else {
                u32::from(c - b'A') + 10
            };
            body.push(c);
        }
        body.push(match 11 - org_sum % 11 {
            11 => b'0',
            10 => b'X',
            n => b'0' + n as u8,
        });
        let mut w = 1u32;
        let mut sum = 0u32;
        for c in &body {
            sum += A.iter().position(|a| a == c).unwrap_or(0) as u32 * w;
            w = w * 3 % 31;
        }
        let mut check = (31 - sum % 31) % 31;
        if !valid {
            check = (check + 1 + self.rng.random_range(0..29)) % 31;
        }
        body.push(A[check as usize]);
        String::from_utf8(body).unwrap_or_default()
    }

    pub fn cn_mobile(&mut self) -> String {
        let n = format!("1{}{}", self.rng.random_range(3..10), self.digits(9));
        match self.rng.random_range(0..4) {
            0 => format!("+86 {} {} {}", &n[..3], &n[3..7], &n[7..]),
            1 => format!("{}-{}-{}", &n[..3], &n[3..7], &n[7..]),
            _ => n,
        }
    }

    pub fn email(&mut self) -> String {
        let user = self.pick(&[
            "alice",
            "wang.wei",
            "li_na88",
            "j.smith",
            "zhang-san",
            "ops+alerts",
        ]);
        let domain = self.pick(&[
            "example.com",
            "mail.example.cn",
            "corp.example.co.uk",
            "qq.com",
        ]);
        format!("{user}{}@{domain}", self.rng.random_range(0..100))
    }

    pub fn ssn(&mut self) -> String {
        format!(
            "{:03}-{:02}-{:04}",
            self.rng.random_range(1..666),
            self.rng.random_range(1..100),
            self.rng.random_range(1..10000)
        )
    }

    /// A Hong Kong identity card number, `A123456(3)` or without the brackets.
    pub fn hk_id(&mut self, valid: bool) -> String {
        let letters: String = (0..self.rng.random_range(1..3))
            .map(|_| char::from(b'A' + self.rng.random_range(0..26u8)))
            .collect();
        let digits = self.digits(6);
        let mut values: Vec<u32> = Vec::new();
        if letters.len() == 1 {
            values.push(36);
        }
        values.extend(letters.bytes().map(|c| u32::from(c - b'A') + 10));
        values.extend(digits.bytes().map(|c| u32::from(c - b'0')));
        let sum: u32 = values.iter().zip((2..=9).rev()).map(|(v, w)| v * w).sum();
        let mut check = (11 - sum % 11) % 11;
        if !valid {
            check = (check + 1 + self.rng.random_range(0..10)) % 11;
        }
        let c = match check {
            10 => 'A',
            n => char::from(b'0' + n as u8),
        };
        if self.rng.random_bool(0.5) {
            format!("{letters}{digits}({c})")
        } else {
            format!("{letters}{digits}{c}")
        }
    }

    /// A Taiwan national identification number.
    pub fn tw_id(&mut self, valid: bool) -> String {
        const CODES: [u32; 26] = [
            10, 11, 12, 13, 14, 15, 16, 17, 34, 18, 19, 20, 21, 22, 35, 23, 24, 25, 26, 27, 28, 29,
            32, 30, 31, 33,
        ];
        let letter = self.rng.random_range(0..26u8);
        let body = format!("{}{}", self.rng.random_range(1..3), self.digits(7));
        let code = CODES[usize::from(letter)];
        let weights = [8, 7, 6, 5, 4, 3, 2, 1];
        let sum = code / 10
            + (code % 10) * 9
            + body
                .bytes()
                .zip(weights)
                .map(|(c, w)| u32::from(c - b'0') * w)
                .sum::<u32>();
        let mut check = (10 - sum % 10) % 10;
        if !valid {
            check = (check + 1 + self.rng.random_range(0..9)) % 10;
        }
        format!("{}{body}{check}", char::from(b'A' + letter))
    }

    /// A UK NHS number (mod 11), plain or in 3-3-4 groups.
    pub fn uk_nhs(&mut self, valid: bool) -> String {
        loop {
            let body = self.digits(9);
            let sum: u32 = body
                .bytes()
                .zip((2..=10).rev())
                .map(|(c, w)| u32::from(c - b'0') * w)
                .sum();
            let check = (11 - sum % 11) % 11;
            if check == 10 || body.bytes().all(|b| b == body.as_bytes()[0]) {
                continue;
            }
            let check = if valid {
                check
            } else {
                (check + 1 + self.rng.random_range(0..9)) % 10
            };
            let n = format!("{body}{check}");
            return match self.rng.random_range(0..3) {
                0 => format!("{} {} {}", &n[..3], &n[3..6], &n[6..]),
                1 => format!("{}-{}-{}", &n[..3], &n[3..6], &n[6..]),
                _ => n,
            };
        }
    }

    /// A UK National Insurance number, with or without spaces.
    pub fn uk_nino(&mut self) -> String {
        const FIRST: &[u8] = b"ABCEGHJKLMNOPRSTWXYZ";
        const SECOND: &[u8] = b"ABCEGHJKLMNPRSTWXYZ";
        let (a, b) = loop {
            let a = FIRST[self.rng.random_range(0..FIRST.len())];
            let b = SECOND[self.rng.random_range(0..SECOND.len())];
            if !matches!(
                &[a, b],
                b"BG" | b"GB" | b"NK" | b"KN" | b"TN" | b"NT" | b"ZZ"
            ) {
                break (char::from(a), char::from(b));
            }
        };
        let d = self.digits(6);
        let suffix = char::from(b'A' + self.rng.random_range(0..4u8));
        if self.rng.random_bool(0.5) {
            format!("{a}{b} {} {} {} {suffix}", &d[..2], &d[2..4], &d[4..])
        } else {
            format!("{a}{b}{d}{suffix}")
        }
    }

    /// An IPv4 or IPv6 address.
    pub fn ip(&mut self) -> String {
        if self.rng.random_bool(0.5) {
            format!(
                "{}.{}.{}.{}",
                self.rng.random_range(1..224),
                self.rng.random_range(0..256),
                self.rng.random_range(0..256),
                self.rng.random_range(1..255)
            )
        } else {
            let groups: Vec<String> = (0..8)
                .map(|_| format!("{:x}", self.rng.random_range(0..0x10000u32)))
                .collect();
            if self.rng.random_bool(0.5) {
                format!("{}::{}", groups[..3].join(":"), groups[7])
            } else {
                groups.join(":")
            }
        }
    }

    /// A MAC address in one of its three written forms, with at least one digit.
    pub fn mac(&mut self) -> String {
        let mut bytes: Vec<u8> = (0..6).map(|_| self.rng.random_range(0..=255u8)).collect();
        bytes[5] &= 0x99; // a nibble of 0-9 in the last byte, so that a digit is always there
        let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
        match self.rng.random_range(0..3) {
            0 => hex.join(":").to_ascii_uppercase(),
            1 => hex.join("-"),
            _ => format!(
                "{}{}.{}{}.{}{}",
                hex[0], hex[1], hex[2], hex[3], hex[4], hex[5]
            ),
        }
    }

    /// Numbers that look like data but are not: they must produce no finding.
    pub fn hard_negative(&mut self) -> String {
        match self.rng.random_range(0..8) {
            0 => format!("订单号{}", format_args!("20{}", self.digits(16))),
            1 => format!(
                "2024-{:02}-{:02} {:02}:{:02}:{:02}",
                self.rng.random_range(1..13),
                self.rng.random_range(1..29),
                self.rng.random_range(0..24),
                self.rng.random_range(0..60),
                self.rng.random_range(0..60)
            ),
            2 => format!(
                "¥{},{:03}.{:02}",
                self.rng.random_range(1..999),
                self.rng.random_range(0..1000),
                self.rng.random_range(0..100)
            ),
            3 => format!(
                "v{}.{}.{}",
                self.rng.random_range(0..20),
                self.rng.random_range(0..50),
                self.rng.random_range(0..200)
            ),
            4 => format!(
                "timestamp {}",
                1_600_000_000 + self.rng.random_range(0..100_000_000u64)
            ),
            5 => format!(
                "build 10.0.{}.{}",
                self.rng.random_range(10000..30000),
                self.rng.random_range(1..999)
            ),
            6 => format!(
                "$1,{:03},{:03}.{:02}",
                self.rng.random_range(0..1000),
                self.rng.random_range(0..1000),
                self.rng.random_range(0..100)
            ),
            _ => format!("ticket #{}", self.digits(7)),
        }
    }

    /// One labelled sample of a random kind.
    pub fn sample(&mut self) -> Sample {
        match self.rng.random_range(0..24) {
            0 => {
                let v = self.card(true);
                let v = self.maybe_full_width(v);
                self.sentence("CREDIT_CARD", &v, false)
            }
            1 => {
                let v = self.cn_id(true);
                let v = self.maybe_full_width(v);
                self.sentence("CN_RESIDENT_ID", &v, false)
            }
            2 => {
                let v = self.iban(true);
                self.sentence("IBAN_CODE", &v, false)
            }
            3 => {
                let v = self.uscc(true);
                self.sentence("CN_USCC", &v, false)
            }
            4 => {
                let v = self.cn_mobile();
                let v = self.maybe_full_width(v);
                self.sentence("PHONE_NUMBER", &v, false)
            }
            5 => {
                let v = self.email();
                self.sentence("EMAIL_ADDRESS", &v, false)
            }
            6 => {
                let v = format!("SSN {}", self.ssn());
                let mut s = self.sentence("US_SSN", &v, false);
                if let Some(l) = s.labels.first_mut() {
                    l.1 += 4;
                }
                s
            }
            7 => {
                let v = self.card(false);
                self.sentence("CREDIT_CARD", &v, true)
            }
            8 => {
                let v = self.cn_id(false);
                self.sentence("CN_RESIDENT_ID", &v, true)
            }
            9 => {
                let v = self.iban(false);
                self.sentence("IBAN_CODE", &v, true)
            }
            10 => {
                let v = self.uscc(false);
                self.sentence("CN_USCC", &v, true)
            }
            11 => {
                let v = format!("HKID {}", self.hk_id(true));
                self.labelled_after("HK_ID", &v, 5)
            }
            12 => {
                let v = format!("身分證{}", self.tw_id(true));
                self.labelled_after("TW_ID", &v, "身分證".len())
            }
            13 => {
                let v = format!("NHS number {}", self.uk_nhs(true));
                self.labelled_after("UK_NHS", &v, 11)
            }
            14 => {
                let v = format!("NINO {}", self.uk_nino());
                self.labelled_after("UK_NINO", &v, 5)
            }
            15 => {
                let v = self.ip();
                self.sentence("IP_ADDRESS", &v, false)
            }
            16 => {
                let v = format!("device {}", self.mac());
                self.labelled_after("MAC_ADDRESS", &v, 7)
            }
            17 => {
                let v = format!("HKID {}", self.hk_id(false));
                self.sentence("HK_ID", &v, true)
            }
            18 => {
                let v = format!("身分證{}", self.tw_id(false));
                self.sentence("TW_ID", &v, true)
            }
            19 => {
                let v = format!("NHS number {}", self.uk_nhs(false));
                self.sentence("UK_NHS", &v, true)
            }
            _ => {
                let v = self.hard_negative();
                self.sentence("NONE", &v, true)
            }
        }
    }

    /// A sentence around `value`, labelled from byte `skip` of it (after its context word).
    fn labelled_after(&mut self, entity: &'static str, value: &str, skip: usize) -> Sample {
        let mut s = self.sentence(entity, value, false);
        if let Some(l) = s.labels.first_mut() {
            l.1 += skip;
        }
        s
    }

    /// A typical chat completion request body of about `bytes` of message text: a system
    /// prompt, then user and assistant turns of prose, each with one labelled sample.
    pub fn chat_request(&mut self, bytes: usize) -> Vec<u8> {
        let mut messages = vec![serde_json::json!({
            "role": "system",
            "content": "You are a helpful assistant for the bank's operations team.",
        })];
        let mut size = 0;
        while size < bytes {
            let text = format!("{} {}", self.prose(600, false), self.sample().text);
            size += text.len();
            let role = if messages.len() % 2 == 1 {
                "user"
            } else {
                "assistant"
            };
            messages.push(serde_json::json!({"role": role, "content": text}));
        }
        serde_json::to_vec(&serde_json::json!({"model": "gpt-4o", "messages": messages}))
            .expect("a JSON value serialises")
    }

    /// What the DLP bench's chat request measures, once: parse `body`, scan it, pseudonymise
    /// per `table` and serialise it again; the rewritten body's length.
    pub fn chat_round_trip(scanner: &Scanner, table: &ActionTable, body: &[u8]) -> usize {
        let mut req = api::parse(Api::ChatCompletions, Some("application/json"), body)
            .expect("a valid chat request");
        let findings = scan_request(scanner, Api::ChatCompletions, &mut req.body);
        let mut pseudonyms = Pseudonyms::default();
        // A blocked request is rewritten all the same: the bench measures the work.
        let _ = apply_request(
            Api::ChatCompletions,
            &mut req.body,
            &findings,
            table,
            b"k",
            &mut pseudonyms,
        );
        serde_json::to_vec(&req.body)
            .expect("a JSON value serialises")
            .len()
    }

    /// Mixed Chinese and English prose with a sparse sprinkling of personal data, `bytes` long.
    pub fn prose(&mut self, bytes: usize, dense_digits: bool) -> String {
        const FILLER: [&str; 6] = [
            "The quarterly review covers revenue, headcount and the roadmap for the next release. ",
            "本季度的业务回顾包括收入、人员和下一版本的路线图，请各部门按时提交材料。",
            "We met the customer on site and agreed on the migration plan and its milestones. ",
            "会议纪要：双方确认了迁移方案以及各阶段的交付时间，后续将每周同步进展。",
            "Please review the attached design document and leave comments by Thursday. ",
            "请在周四之前审阅附件中的设计文档并提出修改意见，谢谢大家的配合。",
        ];
        let mut out = String::with_capacity(bytes + 256);
        while out.len() < bytes {
            if dense_digits {
                let s = self.hard_negative();
                out.push_str(&s);
                out.push_str(if self.rng.random_bool(0.5) {
                    "，金额"
                } else {
                    "; qty "
                });
                let n = self.rng.random_range(1..9);
                out.push_str(&self.digits(n));
                out.push(' ');
            } else {
                out.push_str(FILLER[self.rng.random_range(0..FILLER.len())]);
            }
            if self.rng.random_range(0..20) == 0 {
                out.push_str(&self.sample().text);
            }
        }
        out
    }
}
