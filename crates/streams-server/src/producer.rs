//! Idempotent producers: `(Producer-Id, Producer-Epoch, Producer-Seq)` makes retried appends
//! safe. The state checked here is stored in the same record as the data it guards, so a crash
//! can never leave one without the other.

use axum::http::HeaderMap;

use crate::error::StreamError;
use crate::headers;

/// The largest integer a JavaScript client can send exactly (2^53 − 1).
const MAX_NUMBER: u64 = (1 << 53) - 1;

/// A producer's claim on one append.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProducerTuple {
    pub id: String,
    pub epoch: u64,
    pub seq: u64,
}

/// What the stream remembers of a producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerState {
    pub epoch: u64,
    pub last_seq: u64,
}

/// The verdict on a producer's append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Write it, then remember `(epoch, seq)`.
    Accept,
    /// Already written: answer success without writing; `highest` is the last accepted seq.
    Duplicate { highest: u64 },
}

impl ProducerTuple {
    /// Reads the three headers: all or none, digits only, at most 2^53 − 1.
    pub fn from_headers(map: &HeaderMap) -> Result<Option<ProducerTuple>, StreamError> {
        let id = map.get(headers::PRODUCER_ID);
        let epoch = map.get(headers::PRODUCER_EPOCH);
        let seq = map.get(headers::PRODUCER_SEQ);
        let (id, epoch, seq) = match (id, epoch, seq) {
            (None, None, None) => return Ok(None),
            (Some(id), Some(epoch), Some(seq)) => (id, epoch, seq),
            _ => {
                return Err(StreamError::bad_request(
                    headers::PRODUCER_ID,
                    "Producer-Id, Producer-Epoch and Producer-Seq must be sent together",
                ));
            }
        };
        let id = id
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                StreamError::bad_request(headers::PRODUCER_ID, "Producer-Id must be a non-empty string")
            })?;
        let number = |value: &axum::http::HeaderValue, field: &'static str| {
            value
                .to_str()
                .ok()
                .map(str::trim)
                .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|text| text.parse::<u64>().ok())
                .filter(|n| *n <= MAX_NUMBER)
                .ok_or_else(|| {
                    StreamError::bad_request(field, format!("{field} must be an integer from 0 to 2^53-1"))
                })
        };
        Ok(Some(ProducerTuple {
            id: id.to_owned(),
            epoch: number(epoch, headers::PRODUCER_EPOCH)?,
            seq: number(seq, headers::PRODUCER_SEQ)?,
        }))
    }

    /// Judges this append against what the stream knows of the producer.
    pub fn check(&self, known: Option<ProducerState>) -> Result<Verdict, StreamError> {
        let Some(known) = known else {
            return self.first_of_epoch();
        };
        if self.epoch < known.epoch {
            return Err(StreamError::StaleEpoch {
                current: known.epoch,
                received: self.epoch,
            });
        }
        if self.epoch > known.epoch {
            return self.first_of_epoch();
        }
        if self.seq <= known.last_seq {
            Ok(Verdict::Duplicate {
                highest: known.last_seq,
            })
        } else if self.seq == known.last_seq + 1 {
            Ok(Verdict::Accept)
        } else {
            Err(StreamError::SequenceGap {
                expected: known.last_seq + 1,
                received: self.seq,
            })
        }
    }

    /// A new producer, or a new epoch, must start at sequence 0.
    fn first_of_epoch(&self) -> Result<Verdict, StreamError> {
        if self.seq == 0 {
            Ok(Verdict::Accept)
        } else {
            Err(StreamError::bad_request(
                headers::PRODUCER_SEQ,
                "a new producer epoch must start at Producer-Seq 0",
            ))
        }
    }

    /// The state to remember once this append is written.
    pub fn state(&self) -> ProducerState {
        ProducerState {
            epoch: self.epoch,
            last_seq: self.seq,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(epoch: u64, seq: u64) -> ProducerTuple {
        ProducerTuple {
            id: "p".into(),
            epoch,
            seq,
        }
    }

    #[test]
    fn the_table_of_the_protocol() {
        let known = Some(ProducerState {
            epoch: 2,
            last_seq: 5,
        });
        assert!(matches!(
            tuple(1, 6).check(known),
            Err(StreamError::StaleEpoch { current: 2, .. })
        ));
        assert!(matches!(
            tuple(3, 1).check(known),
            Err(StreamError::BadRequest { .. })
        ));
        assert_eq!(tuple(3, 0).check(known), Ok(Verdict::Accept));
        assert_eq!(tuple(2, 5).check(known), Ok(Verdict::Duplicate { highest: 5 }));
        assert_eq!(tuple(2, 0).check(known), Ok(Verdict::Duplicate { highest: 5 }));
        assert_eq!(tuple(2, 6).check(known), Ok(Verdict::Accept));
        assert!(matches!(
            tuple(2, 8).check(known),
            Err(StreamError::SequenceGap {
                expected: 6,
                received: 8
            })
        ));
        assert_eq!(tuple(0, 0).check(None), Ok(Verdict::Accept));
    }

    #[test]
    fn headers_come_together_and_are_plain_numbers() {
        let mut map = HeaderMap::new();
        assert_eq!(ProducerTuple::from_headers(&map), Ok(None));
        map.insert(headers::PRODUCER_ID, "w1".parse().expect("value"));
        assert!(ProducerTuple::from_headers(&map).is_err());
        map.insert(headers::PRODUCER_EPOCH, "0".parse().expect("value"));
        map.insert(headers::PRODUCER_SEQ, "9007199254740992".parse().expect("value"));
        assert!(ProducerTuple::from_headers(&map).is_err());
        map.insert(headers::PRODUCER_SEQ, "7".parse().expect("value"));
        assert_eq!(
            ProducerTuple::from_headers(&map),
            Ok(Some(tuple_named("w1", 0, 7)))
        );
    }

    fn tuple_named(id: &str, epoch: u64, seq: u64) -> ProducerTuple {
        ProducerTuple {
            id: id.into(),
            epoch,
            seq,
        }
    }
}
