//! Streaming detokenization: bytes of tokens in, only whole UTF-8 characters
//! out, so a character split across tokens is never emitted broken.

#[derive(Default)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    /// Adds a token's bytes; returns the text that is now complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(s) => s.len(),
            // An invalid sequence (not just an unfinished one) cannot become
            // valid later: emit it replaced rather than hold it forever.
            Err(e) if e.error_len().is_some() => return self.flush(),
            Err(e) => e.valid_up_to(),
        };
        let rest = self.pending.split_off(valid);
        String::from_utf8(std::mem::replace(&mut self.pending, rest)).expect("validated prefix")
    }

    /// Whatever is left at the end, with broken bytes replaced.
    pub fn flush(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_back_partial_characters() {
        let mut d = StreamDecoder::default();
        let bytes = "é€".as_bytes(); // c3 a9, e2 82 ac
        assert_eq!(d.push(&bytes[..1]), "");
        assert_eq!(d.push(&bytes[1..3]), "é");
        assert_eq!(d.push(&bytes[3..4]), "");
        assert_eq!(d.push(&bytes[4..]), "€");
        assert_eq!(d.flush(), "");
    }

    #[test]
    fn invalid_bytes_are_replaced_not_held() {
        let mut d = StreamDecoder::default();
        assert_eq!(d.push(&[0xff, b'a']), "\u{fffd}a");
        assert_eq!(d.push(&[0xe2, 0x82]), "");
        assert_eq!(d.flush(), "\u{fffd}");
    }
}
