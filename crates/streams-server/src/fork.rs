//! Forks: a new stream that inherits a prefix of another and then goes its own way.
//!
//! A fork shares its source's offset space: it reads the source's bytes before the fork offset,
//! then its own appends, which continue from there. A sub-offset reaches N bytes (or, for JSON,
//! N messages) past the fork offset; those are copied into the fork as its first own record, so
//! the fork offset itself always stays a message boundary of the source.

use axum::http::HeaderMap;

use crate::content_type::Kind;
use crate::error::StreamError;
use crate::headers;
use crate::offset::Offset;
use crate::stream::Stream;

/// The fork headers of a create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForkRequest {
    /// The source's path (`Stream-Forked-From`).
    pub from: String,
    /// `Stream-Fork-Offset`; the source's tail when absent.
    pub offset: Option<Offset>,
    /// `Stream-Fork-Sub-Offset`; absent means 0.
    pub sub_offset: u64,
}

impl ForkRequest {
    /// Reads the fork headers; fork offsets without a source are a 400.
    pub fn from_headers(map: &HeaderMap) -> Result<Option<ForkRequest>, StreamError> {
        let from = headers::text(map, headers::STREAM_FORKED_FROM);
        let offset = headers::text(map, headers::STREAM_FORK_OFFSET);
        let sub_offset = headers::text(map, headers::STREAM_FORK_SUB_OFFSET);
        let Some(from) = from else {
            if offset.is_some() || sub_offset.is_some() {
                return Err(StreamError::bad_request(
                    headers::STREAM_FORK_OFFSET,
                    "Stream-Fork-Offset and Stream-Fork-Sub-Offset need Stream-Forked-From",
                ));
            }
            return Ok(None);
        };
        let from = from.trim();
        if !from.starts_with('/') {
            return Err(StreamError::bad_request(
                headers::STREAM_FORKED_FROM,
                "Stream-Forked-From must be the source stream's path, e.g. /v1/stream/source",
            ));
        }
        let offset = offset
            .map(|text| {
                Offset::parse(text.trim()).ok_or_else(|| {
                    StreamError::bad_request(
                        headers::STREAM_FORK_OFFSET,
                        "Stream-Fork-Offset must be an offset the source handed out",
                    )
                })
            })
            .transpose()?;
        let sub_offset = sub_offset
            .map(|text| {
                let text = text.trim();
                let canonical = text == "0"
                    || (!text.starts_with('0')
                        && !text.is_empty()
                        && text.bytes().all(|b| b.is_ascii_digit()));
                canonical
                    .then(|| text.parse::<u64>().ok())
                    .flatten()
                    .ok_or_else(|| {
                        StreamError::bad_request(
                            headers::STREAM_FORK_SUB_OFFSET,
                            "Stream-Fork-Sub-Offset must be a whole number (bytes, or messages for JSON)",
                        )
                    })
            })
            .transpose()?
            .unwrap_or(0);
        Ok(Some(ForkRequest {
            from: from.to_owned(),
            offset,
            sub_offset,
        }))
    }
}

/// Where a fork starts, and the messages its sub-offset copies from the source.
#[derive(Debug)]
pub struct ForkPoint {
    pub at: u64,
    pub prefix: Vec<Vec<u8>>,
}

/// Resolves a fork request against its source's visible data.
pub fn resolve(source: &Stream, request: &ForkRequest) -> Result<ForkPoint, StreamError> {
    let tail = source.tail().offset.0;
    let at = request.offset.map_or(tail, |offset| offset.0);
    if at > tail {
        return Err(StreamError::bad_request(
            headers::STREAM_FORK_OFFSET,
            "Stream-Fork-Offset is past the source's tail",
        ));
    }
    // JSON forks inherit whole messages only: an offset inside one would cut it in two.
    let on_boundary = at == 0 || at == tail || source.first_boundary_after(at - 1) == Some(at);
    if source.config.kind == Kind::Json && !on_boundary {
        return Err(StreamError::bad_request(
            headers::STREAM_FORK_OFFSET,
            "Stream-Fork-Offset lies inside a JSON message; fork at an offset the source handed out",
        ));
    }
    let past_tail = || {
        StreamError::bad_request(
            headers::STREAM_FORK_SUB_OFFSET,
            "Stream-Fork-Sub-Offset reaches past the source's data",
        )
    };
    let mut prefix = Vec::new();
    if request.sub_offset > 0 {
        if source.config.kind == Kind::Json {
            let mut from = at;
            for _ in 0..request.sub_offset {
                let end = source
                    .first_boundary_after(from)
                    .filter(|end| *end <= tail)
                    .ok_or_else(past_tail)?;
                let mut message = Vec::new();
                source.collect(from, end, &mut message)?;
                prefix.push(message);
                from = end;
            }
        } else {
            let end = at
                .checked_add(request.sub_offset)
                .filter(|end| *end <= tail)
                .ok_or_else(past_tail)?;
            let mut bytes = Vec::new();
            source.collect(at, end, &mut bytes)?;
            prefix.push(bytes);
        }
    }
    Ok(ForkPoint { at, prefix })
}
