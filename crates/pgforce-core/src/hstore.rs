//! hstore text, byte for byte as PostgreSQL's `hstore_out` writes it.
//!
//! The trigger log stores `old`/`values` as hstore text, and Heroku Connect users compare and re-parse it, so the
//! capture trigger must render exactly what `(hstore(NEW) - excluded)::text` would: pairs ordered by key length
//! and then key bytes (hstore's internal order), each `"key"=>"value"` with `"` and `\` escaped by a backslash,
//! SQL NULL written as a bare `NULL`, pairs joined by `, `, and the empty hstore as the empty string.

use std::cmp::Ordering;

/// hstore's own key order: shorter keys first, equal lengths by raw bytes.
pub fn compare_keys(a: &[u8], b: &[u8]) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Indices of `keys` in hstore order (stable, so equal keys keep their input order).
pub fn key_order<K: AsRef<[u8]>>(keys: &[K]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by(|&a, &b| compare_keys(keys[a].as_ref(), keys[b].as_ref()));
    order
}

/// Appends hstore pairs to a byte buffer in the caller's order (the caller sorts keys once per table).
#[derive(Debug, Default)]
pub struct HstoreWriter {
    buf: Vec<u8>,
    pairs: usize,
}

impl HstoreWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forget the content but keep the allocation, so one writer serves every row of a statement.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.pairs = 0;
    }

    pub fn push(&mut self, key: &[u8], value: Option<&[u8]>) {
        if self.pairs > 0 {
            self.buf.extend_from_slice(b", ");
        }
        self.pairs += 1;
        push_quoted(&mut self.buf, key);
        self.buf.extend_from_slice(b"=>");
        match value {
            Some(v) => push_quoted(&mut self.buf, v),
            None => self.buf.extend_from_slice(b"NULL"),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pairs == 0
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }
}

fn push_quoted(buf: &mut Vec<u8>, s: &[u8]) {
    buf.reserve(s.len() + 2);
    buf.push(b'"');
    let mut start = 0;
    for (i, &c) in s.iter().enumerate() {
        if c == b'"' || c == b'\\' {
            buf.extend_from_slice(&s[start..i]);
            buf.push(b'\\');
            start = i;
        }
    }
    buf.extend_from_slice(&s[start..]);
    buf.push(b'"');
}

/// Renders pairs in hstore order.
pub fn render<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, Option<V>)]) -> Vec<u8> {
    let keys: Vec<&[u8]> = pairs.iter().map(|(k, _)| k.as_ref()).collect();
    let mut w = HstoreWriter::new();
    for i in key_order(&keys) {
        w.push(pairs[i].0.as_ref(), pairs[i].1.as_ref().map(|v| v.as_ref()));
    }
    w.buf
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("unexpected end of hstore text at byte {0}")]
    UnexpectedEnd(usize),
    #[error("unexpected character {found:?} at byte {at} of hstore text (expected {expected})")]
    Unexpected { at: usize, found: char, expected: &'static str },
}

/// Parses hstore text (as `hstore_in` accepts it: quoted or bare words, `NULL` for SQL NULL) into pairs in text
/// order. Later duplicates win, as in hstore.
pub fn parse(text: &str) -> Result<Vec<(String, Option<String>)>, ParseError> {
    let mut p = Parser { s: text.as_bytes(), i: 0 };
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    loop {
        p.skip_ws();
        if p.at_end() {
            break;
        }
        let (key, _) = p.word()?;
        p.skip_ws();
        p.expect(b'=', "'=>'")?;
        p.expect(b'>', "'=>'")?;
        p.skip_ws();
        let (value, quoted) = p.word()?;
        let value = if !quoted && value.eq_ignore_ascii_case("null") { None } else { Some(value) };
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => out.push((key, value)),
        }
        p.skip_ws();
        if p.at_end() {
            break;
        }
        p.expect(b',', "','")?;
    }
    Ok(out)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn at_end(&self) -> bool {
        self.i >= self.s.len()
    }

    fn skip_ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn expect(&mut self, c: u8, expected: &'static str) -> Result<(), ParseError> {
        match self.s.get(self.i) {
            Some(&got) if got == c => {
                self.i += 1;
                Ok(())
            }
            Some(&got) => Err(ParseError::Unexpected { at: self.i, found: got as char, expected }),
            None => Err(ParseError::UnexpectedEnd(self.i)),
        }
    }

    /// A quoted or bare word; returns the unescaped text and whether it was quoted.
    fn word(&mut self) -> Result<(String, bool), ParseError> {
        let mut bytes = Vec::new();
        let quoted = self.s.get(self.i) == Some(&b'"');
        if quoted {
            self.i += 1;
            loop {
                match self.s.get(self.i) {
                    None => return Err(ParseError::UnexpectedEnd(self.i)),
                    Some(b'\\') => {
                        let next = *self.s.get(self.i + 1).ok_or(ParseError::UnexpectedEnd(self.i + 1))?;
                        bytes.push(next);
                        self.i += 2;
                    }
                    Some(b'"') => {
                        self.i += 1;
                        break;
                    }
                    Some(&c) => {
                        bytes.push(c);
                        self.i += 1;
                    }
                }
            }
        } else {
            while let Some(&c) = self.s.get(self.i) {
                if c.is_ascii_whitespace() || c == b'=' || c == b',' {
                    break;
                }
                if c == b'\\' {
                    let next = *self.s.get(self.i + 1).ok_or(ParseError::UnexpectedEnd(self.i + 1))?;
                    bytes.push(next);
                    self.i += 2;
                } else {
                    bytes.push(c);
                    self.i += 1;
                }
            }
            if bytes.is_empty() {
                return match self.s.get(self.i) {
                    Some(&c) => {
                        Err(ParseError::Unexpected { at: self.i, found: c as char, expected: "a key or value" })
                    }
                    None => Err(ParseError::UnexpectedEnd(self.i)),
                };
            }
        }
        // Input was &str and escapes only drop ASCII backslashes, so the bytes stay valid UTF-8.
        Ok((String::from_utf8_lossy(&bytes).into_owned(), quoted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[u8]) -> &str {
        std::str::from_utf8(v).unwrap()
    }

    #[test]
    fn orders_keys_by_length_then_bytes() {
        let out = render(&[("name", Some("x")), ("id", Some("1")), ("b", None::<&str>), ("a", Some("2"))]);
        assert_eq!(s(&out), r#""a"=>"2", "b"=>NULL, "id"=>"1", "name"=>"x""#);
    }

    #[test]
    fn escapes_quotes_and_backslashes_only() {
        let out = render(&[("k\"ey", Some("va\\l\"ue, =>\nü"))]);
        assert_eq!(s(&out), "\"k\\\"ey\"=>\"va\\\\l\\\"ue, =>\nü\"");
    }

    #[test]
    fn empty_hstore_is_empty_string() {
        let none: [(&str, Option<&str>); 0] = [];
        assert_eq!(render(&none), b"");
    }

    #[test]
    fn null_text_value_is_quoted_and_sql_null_is_bare() {
        let out = render(&[("a", Some("NULL")), ("b", None)]);
        assert_eq!(s(&out), r#""a"=>"NULL", "b"=>NULL"#);
        let parsed = parse(s(&out)).unwrap();
        assert_eq!(parsed, vec![("a".into(), Some("NULL".into())), ("b".into(), None)]);
    }

    #[test]
    fn parse_round_trips_awkward_values() {
        let pairs = vec![
            ("x".to_string(), Some("".to_string())),
            ("quote".to_string(), Some("say \"hi\" \\ bye".to_string())),
            ("arr".to_string(), Some("{\"a b\",NULL,\"c\\\\d\"}".to_string())),
            ("ts".to_string(), Some("2024-01-02 03:04:05.123456+00".to_string())),
            ("uni".to_string(), Some("日本語 ☃".to_string())),
            ("n".to_string(), None),
        ];
        let text = render(&pairs);
        let mut parsed = parse(s(&text)).unwrap();
        let mut expected = pairs.clone();
        parsed.sort();
        expected.sort();
        assert_eq!(parsed, expected);
    }

    #[test]
    fn parse_accepts_bare_words_and_whitespace() {
        let parsed = parse(" a => 1 ,b=>NULL,  \"c\"=>\"NULL\" ").unwrap();
        assert_eq!(parsed, vec![("a".into(), Some("1".into())), ("b".into(), None), ("c".into(), Some("NULL".into()))]);
    }

    #[test]
    fn parse_rejects_garbage() {
        assert!(matches!(parse("\"a\"=>"), Err(ParseError::UnexpectedEnd(_))));
        assert!(matches!(parse("\"a\" \"b\""), Err(ParseError::Unexpected { .. })));
        assert!(matches!(parse("\"a"), Err(ParseError::UnexpectedEnd(_))));
    }

    #[test]
    fn writer_reuses_buffer() {
        let mut w = HstoreWriter::new();
        w.push(b"a", Some(b"1"));
        assert_eq!(w.as_bytes(), br#""a"=>"1""#);
        w.clear();
        assert!(w.is_empty());
        w.push(b"b", None);
        assert_eq!(w.as_bytes(), br#""b"=>NULL"#);
    }
}
