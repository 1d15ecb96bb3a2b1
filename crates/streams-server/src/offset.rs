//! Offsets: opaque to clients, a byte position in the stream to us.
//!
//! The wire form is fixed width (`0000000000000000_0000000000001234`) so that byte-wise order is
//! stream order; the first field is reserved (always zero) so the format can grow without
//! breaking that order.

use crate::error::StreamError;

/// A position in a stream: the number of stored bytes before it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Offset(pub u64);

impl std::fmt::Display for Offset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016}_{:016}", 0, self.0)
    }
}

impl Offset {
    /// Parses the wire form; `None` for anything else.
    pub fn parse(text: &str) -> Option<Offset> {
        let (high, low) = text.split_once('_')?;
        let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(high) || !digits(low) {
            return None;
        }
        if high.parse::<u64>().ok()? != 0 {
            return None;
        }
        low.parse().ok().map(Offset)
    }
}

/// Where a read starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFrom {
    /// `-1` or no offset: the first byte.
    Start,
    /// `now`: the current tail.
    Now,
    /// A position the server handed out earlier.
    At(Offset),
}

impl ReadFrom {
    /// The position this names in a stream whose visible tail is at `tail`; an offset past the
    /// tail reads as the tail (an empty, up-to-date answer).
    pub fn position(self, tail: u64) -> u64 {
        match self {
            ReadFrom::Start => 0,
            ReadFrom::Now => tail,
            ReadFrom::At(offset) => offset.0.min(tail),
        }
    }

    /// Parses the `offset` query parameter (all its occurrences, since repeating it is an error).
    pub fn from_query(values: &[&str]) -> Result<Option<ReadFrom>, StreamError> {
        match values {
            [] => Ok(None),
            [one] => Self::parse(one).map(Some),
            _ => Err(StreamError::bad_request(
                "offset",
                "the offset parameter is repeated",
            )),
        }
    }

    fn parse(value: &str) -> Result<ReadFrom, StreamError> {
        match value {
            "-1" => Ok(ReadFrom::Start),
            "now" => Ok(ReadFrom::Now),
            "" => Err(StreamError::bad_request("offset", "the offset is empty")),
            other => Offset::parse(other).map(ReadFrom::At).ok_or_else(|| {
                StreamError::bad_request(
                    "offset",
                    "the offset is malformed: use -1, now, or a Stream-Next-Offset value",
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_form_orders_byte_wise_like_positions() {
        let small = Offset(9).to_string();
        let large = Offset(10).to_string();
        assert!(small < large);
        assert_eq!(Offset::parse(&large), Some(Offset(10)));
        assert_eq!(small.len(), 33);
    }

    #[test]
    fn special_and_malformed_offsets() {
        assert_eq!(ReadFrom::from_query(&[]).ok(), Some(None));
        assert_eq!(ReadFrom::from_query(&["-1"]).ok(), Some(Some(ReadFrom::Start)));
        assert_eq!(ReadFrom::from_query(&["now"]).ok(), Some(Some(ReadFrom::Now)));
        for bad in ["", "abc", "1_2_3", "../x", "0_ 1", "1,2", "-2", "1_-1", "7_0"] {
            assert!(ReadFrom::from_query(&[bad]).is_err(), "{bad:?} must be rejected");
        }
        assert!(ReadFrom::from_query(&["-1", "-1"]).is_err());
    }
}
