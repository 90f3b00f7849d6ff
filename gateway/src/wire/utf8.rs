//! Incremental UTF-8 validation of text messages (`validation.utf8`), fed payload bytes as
//! they pass; a character may straddle reads and frames, so up to three bytes of an
//! unfinished one are carried to the next call.

/// The state of one text message being checked: the start of a character cut off so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Utf8Check {
    partial: [u8; 4],
    partial_len: u8,
}

/// Bytes that are not UTF-8 (RFC 6455 section 8.1: the connection fails with 1007).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InvalidUtf8;

impl Utf8Check {
    /// Checks the next bytes of the message.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), InvalidUtf8> {
        if self.partial_len > 0 {
            let have = usize::from(self.partial_len);
            // The carried bytes began a character that `from_utf8` found well-formed so far,
            // so their first byte is a valid lead byte.
            let width = match self.partial[0] {
                0xF0.. => 4,
                0xE0.. => 3,
                _ => 2,
            };
            let take = (width - have).min(bytes.len());
            self.partial[have..have + take].copy_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            let filled = have + take;
            match std::str::from_utf8(&self.partial[..filled]) {
                Ok(_) => self.partial_len = 0,
                // Still unfinished: `bytes` ran out.
                Err(err) if err.error_len().is_none() => {
                    self.partial_len = filled as u8;
                    return Ok(());
                }
                Err(_) => return Err(InvalidUtf8),
            }
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => Ok(()),
            // `error_len` is `None` only for a character cut off by the end of `bytes`.
            Err(err) if err.error_len().is_none() => {
                let tail = &bytes[err.valid_up_to()..];
                self.partial[..tail.len()].copy_from_slice(tail);
                self.partial_len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(InvalidUtf8),
        }
    }

    /// Ends the message: a character still unfinished is invalid.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let unfinished = self.partial_len > 0;
        *self = Self::default();
        if unfinished { Err(InvalidUtf8) } else { Ok(()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` split at every pair of places, and compares with `std::str::from_utf8`.
    fn agrees_in_every_split(bytes: &[u8]) {
        let expected = std::str::from_utf8(bytes).is_ok();
        for first in 0..=bytes.len() {
            for second in first..=bytes.len() {
                let mut check = Utf8Check::default();
                let valid = [&bytes[..first], &bytes[first..second], &bytes[second..]]
                    .iter()
                    .try_for_each(|piece| check.feed(piece))
                    .and_then(|()| check.finish())
                    .is_ok();
                assert_eq!(valid, expected, "{bytes:x?} split at {first} and {second}");
            }
        }
    }

    #[test]
    fn agrees_with_the_standard_library_however_the_bytes_are_split() {
        for sample in [
            "".as_bytes(),
            "plain ascii".as_bytes(),
            "é日本𝄞 mixed 𝄞".as_bytes(),
            // Cut off at the end, in the middle of a 2, 3 and 4 byte character.
            b"ab\xC3",
            b"ab\xE6\x97",
            b"ab\xF0\x9D\x84",
            // Overlong, surrogate, beyond U+10FFFF, a stray continuation byte.
            b"\xC0\xAF",
            b"\xE0\x80\xAF",
            b"x\xED\xA0\x80y",
            b"\xF4\x90\x80\x80",
            b"a\x80b",
            b"\xF0\x9D\x84\x9E\x9E",
            b"\xE6\x97\xA5\xE6",
        ] {
            agrees_in_every_split(sample);
        }
    }

    #[test]
    fn a_finished_message_leaves_nothing_behind() {
        let mut check = Utf8Check::default();
        check.feed(b"\xC3").unwrap();
        assert_eq!(check.finish(), Err(InvalidUtf8));
        check.feed(b"ok").unwrap();
        assert_eq!(check.finish(), Ok(()));
    }
}
