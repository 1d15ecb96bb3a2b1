//! Gzip for large reads (catch-up and long-poll bodies of 1 KiB or more) when the client
//! accepts it. Only those: appends, errors and SSE never pass through a compressor, so the hot
//! paths pay nothing for it.

use std::io::Write;

use axum::http::{HeaderMap, HeaderValue, header};
use flate2::Compression;
use flate2::write::GzEncoder;

/// Bodies smaller than this go as they are: gzip would save little and cost a pass.
const MIN_BYTES: usize = 1024;

/// Whether the request accepts gzip (`Accept-Encoding: gzip`, not `gzip;q=0`).
pub fn accepted(request: &HeaderMap) -> bool {
    request
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|p| p.replace(' ', "") == "q=0" || p.replace(' ', "") == "q=0.0");
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

/// The body to send: gzipped (with `Content-Encoding`) when accepted and worth it.
pub fn encode(body: Vec<u8>, accepted: bool, response: &mut HeaderMap) -> Vec<u8> {
    if body.len() < MIN_BYTES {
        return body;
    }
    response.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if !accepted {
        return body;
    }
    let mut encoder = GzEncoder::new(Vec::with_capacity(body.len() / 3), Compression::fast());
    match encoder.write_all(&body).and_then(|()| encoder.finish()) {
        Ok(gzipped) => {
            response.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            gzipped
        }
        // Writing to a Vec cannot fail; should it, the plain body is still right.
        Err(_) => body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_encoding_is_read_with_its_weights() {
        let with = |value: &'static str| {
            let mut map = HeaderMap::new();
            map.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(value));
            accepted(&map)
        };
        assert!(with("gzip, deflate"));
        assert!(with("br;q=1.0, GZIP;q=0.5"));
        assert!(!with("gzip;q=0"));
        assert!(!with("deflate"));
        assert!(!accepted(&HeaderMap::new()));
    }

    #[test]
    fn only_large_accepted_bodies_are_compressed() {
        let mut headers = HeaderMap::new();
        assert_eq!(encode(b"small".to_vec(), true, &mut headers), b"small");
        assert!(headers.is_empty());
        let big = vec![b'a'; 4096];
        let out = encode(big.clone(), true, &mut headers);
        assert!(out.len() < big.len());
        assert_eq!(headers[header::CONTENT_ENCODING], "gzip");
        let mut plain = HeaderMap::new();
        assert_eq!(encode(big.clone(), false, &mut plain), big);
        assert_eq!(plain[header::VARY], "accept-encoding");
    }
}
