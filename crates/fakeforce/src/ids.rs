//! Salesforce record ids: 15 case-sensitive base-62 characters (3 of them the object's key prefix) plus, in the
//! 18-character form every API returns, three case-insensitive check characters.

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const CHECK_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";

/// The three check characters of a 15-character id: for each block of five characters, a 5-bit number whose bit i
/// is set when the block's i-th character is an uppercase letter.
pub fn checksum(id15: &str) -> String {
    id15.as_bytes()
        .chunks(5)
        .map(|block| {
            let bits = block
                .iter()
                .enumerate()
                .filter(|(_, c)| c.is_ascii_uppercase())
                .fold(0usize, |acc, (i, _)| acc | (1 << i));
            CHECK_ALPHABET[bits] as char
        })
        .collect()
}

/// The 18-character form of a 15- or 18-character id, or `None` when it is not a valid id (wrong length, a
/// character outside base 62, or an 18-character id whose check characters do not match, compared ignoring case).
pub fn normalize(id: &str) -> Option<String> {
    let body = match id.len() {
        15 => id,
        18 => &id[..15],
        _ => return None,
    };
    if !body.bytes().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    let check = checksum(body);
    if id.len() == 18 && !id[15..].eq_ignore_ascii_case(&check) {
        return None;
    }
    Some(format!("{body}{check}"))
}

/// Makes ids for one org: `<prefix><pod><counter in base 62>` + check characters, so they look like real ones.
#[derive(Debug, Default)]
pub struct IdMint {
    next: u64,
}

impl IdMint {
    pub fn mint(&mut self, key_prefix: &str) -> String {
        self.next += 1;
        let mut counter = [b'0'; 10];
        let mut n = self.next;
        for slot in counter.iter_mut().rev() {
            *slot = BASE62[(n % 62) as usize];
            n /= 62;
        }
        // Two "pod" characters between the prefix and the counter, as real ids have (e.g. 001Dn…).
        let body = format!("{key_prefix}Dn{}", String::from_utf8_lossy(&counter));
        let check = checksum(&body);
        body + &check
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_salesforce_examples() {
        assert_eq!(checksum("001D000000IqhSL"), "IAZ");
        assert_eq!(checksum("00190000001pPvH"), "AAU");
        assert_eq!(checksum("001xx0000004GxD"), "AAU");
    }

    #[test]
    fn normalize_accepts_15_and_18_and_rejects_bad_suffixes() {
        assert_eq!(normalize("001D000000IqhSL").as_deref(), Some("001D000000IqhSLIAZ"));
        assert_eq!(normalize("001D000000IqhSLiaz").as_deref(), Some("001D000000IqhSLIAZ"));
        assert_eq!(normalize("001D000000IqhSLAAA"), None);
        assert_eq!(normalize("001D000000IqhS"), None);
        assert_eq!(normalize("001D000000Iqh-LIAZ"), None);
    }

    #[test]
    fn minted_ids_are_valid_and_distinct() {
        let mut mint = IdMint::default();
        let a = mint.mint("003");
        let b = mint.mint("003");
        assert_ne!(a, b);
        assert!(a.starts_with("003"));
        assert_eq!(a.len(), 18);
        assert_eq!(normalize(&a).as_deref(), Some(a.as_str()));
    }
}

/// The one user of the stand-in org (the integration user every token is issued to): every record's
/// `CreatedById` and `LastModifiedById`.
pub fn integration_user() -> String {
    let id15 = "005Dn00000IntgU";
    format!("{id15}{}", checksum(id15))
}
